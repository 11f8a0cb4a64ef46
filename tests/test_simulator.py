"""Tests of mihu_frames.simulator: real HTTP against a started Simulator on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests

from mihu_frames.simulator import (
    DATA_END,
    DEFAULT_SIZES,
    RequestRecord,
    Simulator,
)
from mihu_frames.simulator.cli import build_parser
from mihu_frames.simulator.clock import DataClock
from mihu_frames.simulator.data import END_US, Dataset

SIZES = (0, 1, 99, 100, 101, 250)
DOCUMENTED_KEYS = [
    "uuid",
    "started_at",
    "ended_at",
    "last_activity_at",
    "evaluated_at",
    "summary",
    "summary_generated_at",
    "created_at",
    "updated_at",
    "conversation_uuid",
    "agent_uuid",
    "contact",
    "call_uuid",
    "campaign_uuid",
    "listing_uuid",
    "task_uuids",
]
PAGE_KEYS = [
    "current_page",
    "total",
    "last_page",
    "per_page",
    "data",
    "from",
    "to",
    "path",
    "next_page_url",
    "prev_page_url",
    "first_page_url",
    "last_page_url",
]
TIMESTAMPS = [
    "started_at",
    "ended_at",
    "last_activity_at",
    "evaluated_at",
    "summary_generated_at",
    "created_at",
    "updated_at",
]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def instant(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with "Z" or an offset (Python 3.10 compatible)."""
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    assert parsed.tzinfo is not None, text
    return parsed


def micros(text: str) -> int:
    return (instant(text) - _EPOCH) // _ONE_US


_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc) - _EPOCH


def url_of(sim: Simulator, conversation: str) -> str:
    return f"{sim.base_url}/api/v1/conversations/{conversation}/sessions"


def get(
    sim: Simulator, conversation: str, *, token: str | None = "sim-token", **params: Any
) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.get(url_of(sim, conversation), params=params, headers=headers, timeout=10)


def fetch_all(sim: Simulator, conversation: str, **params: Any) -> list[dict[str, Any]]:
    """Every page, concatenated, with per_page 100 unless given."""
    params.setdefault("per_page", 100)
    first = get(sim, conversation, **params).json()["data"]
    rows = list(first["data"])
    for page in range(2, first["last_page"] + 1):
        rows += get(sim, conversation, page=page, **params).json()["data"]["data"]
    return rows


def expected_order(rows: list[dict[str, Any]], sort_by: str, sort_dir: str) -> list[str]:
    """Sort by real instants; ties keep insertion (created_at asc) order either way."""
    ordered = sorted(rows, key=lambda r: micros(r[sort_by]), reverse=sort_dir == "desc")
    return [r["uuid"] for r in ordered]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One read-only simulator for the module (tests that change it use ``fresh``)."""
    with Simulator(seed=11, sizes=SIZES) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[Simulator]:
    with Simulator(seed=3, sizes=(5, 100, 40)) as running:
        yield running


@pytest.fixture(scope="module")
def big() -> Simulator:
    """The default dataset (not served), for data-property checks."""
    return Simulator(seed=2024)


# --- envelope and paging -------------------------------------------------------------------
def test_envelope_exact_shape(sim: Simulator) -> None:
    conversation = sim.conversation_uuids[4]  # 101 sessions
    reply = get(sim, conversation)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert int(reply.headers["Content-Length"]) == len(reply.content)
    body = reply.json()
    assert list(body) == ["success", "message", "data"]
    assert body["success"] is True
    assert body["message"] == "Sessions retrieved successfully"
    page = body["data"]
    assert list(page) == PAGE_KEYS
    assert (page["current_page"], page["total"], page["last_page"], page["per_page"]) == (
        1,
        101,
        7,
        15,
    )
    assert len(page["data"]) == 15
    assert (page["from"], page["to"]) == (1, 15)
    assert page["path"] == url_of(sim, conversation)
    assert page["next_page_url"] == url_of(sim, conversation) + "?page=2"
    assert page["prev_page_url"] is None
    assert page["last_page_url"] == url_of(sim, conversation) + "?page=7"
    for session in page["data"]:
        assert list(session)[:16] == DOCUMENTED_KEYS
        assert session["conversation_uuid"] == conversation


@pytest.mark.parametrize(
    ("index", "per_page", "total", "last_page"),
    [(0, 15, 0, 1), (1, 100, 1, 1), (2, 100, 99, 1), (3, 100, 100, 1), (4, 100, 101, 2)],
)
def test_last_page_and_past_the_end(
    sim: Simulator, index: int, per_page: int, total: int, last_page: int
) -> None:
    conversation = sim.conversation_uuids[index]
    page = get(sim, conversation, per_page=per_page).json()["data"]
    assert (page["total"], page["last_page"]) == (total, last_page)
    assert page["last_page"] == max(1, math.ceil(total / per_page))
    assert len(page["data"]) == min(total, per_page)
    beyond = get(sim, conversation, per_page=per_page, page=last_page + 1).json()["data"]
    assert beyond["data"] == []
    assert beyond["current_page"] == last_page + 1
    assert (beyond["total"], beyond["from"], beyond["to"]) == (total, None, None)
    assert beyond["next_page_url"] is None


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", ["created_at", "updated_at", "started_at", "last_activity_at"])
def test_pages_concatenate_to_ground_truth_in_order(
    sim: Simulator, sort_by: str, sort_dir: str
) -> None:
    conversation = sim.conversation_uuids[5]  # 250 sessions
    truth = sim.ground_truth(conversation)
    rows = fetch_all(sim, conversation, per_page=37, sort_by=sort_by, sort_dir=sort_dir)
    assert len(rows) == 250
    assert [r["uuid"] for r in rows] == expected_order(truth, sort_by, sort_dir)
    by_uuid = {r["uuid"]: r for r in truth}
    assert all(row == by_uuid[row["uuid"]] for row in rows)  # identical JSON, extras included


def test_default_sort_is_started_at_desc(sim: Simulator) -> None:
    conversation = sim.conversation_uuids[5]
    rows = fetch_all(sim, conversation)
    assert [r["uuid"] for r in rows] == expected_order(
        sim.ground_truth(conversation), "started_at", "desc"
    )


def test_ground_truth_is_created_at_ascending(sim: Simulator) -> None:
    everything = sim.ground_truth()
    assert len(everything) == sum(SIZES)
    created = [micros(r["created_at"]) for r in everything]
    assert created == sorted(created)
    one = sim.ground_truth(sim.conversation_uuids[5])
    assert [micros(r["created_at"]) for r in one] == sorted(micros(r["created_at"]) for r in one)
    with pytest.raises(KeyError):
        sim.ground_truth(str(uuid.uuid4()))
    with pytest.raises(ValueError, match="status"):
        sim.ground_truth(status="done")


@pytest.mark.parametrize("status", [None, "active", "completed", "timed_out"])
@pytest.mark.parametrize("kind", [None, "text", "voice"])
def test_filters_match_internal_tags(sim: Simulator, status: str | None, kind: str | None) -> None:
    conversation = sim.conversation_uuids[5]
    mine = {r["uuid"] for r in sim.ground_truth(conversation)}
    expected = {
        u
        for u, (s, t) in sim.tags().items()
        if u in mine and status in (None, s) and kind in (None, t)
    }
    # every combination occurs in 250 sessions, but only a handful (here one) is open
    assert expected or (status == "active" and kind is not None)
    params = {k: v for k, v in (("status", status), ("type", kind)) if v is not None}
    rows = fetch_all(sim, conversation, **params)
    assert {r["uuid"] for r in rows} == expected
    assert len(rows) == len(expected)
    truth = sim.ground_truth(conversation, status=status, type=kind)
    assert [r["uuid"] for r in rows] == expected_order(truth, "started_at", "desc")


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_401_unauthenticated(sim: Simulator, token: str | None) -> None:
    reply = get(sim, sim.conversation_uuids[2], token=token)
    assert reply.status_code == 401
    assert reply.json() == {"success": False, "message": "Unauthenticated."}


def test_401_wrong_scheme(sim: Simulator) -> None:
    reply = requests.get(
        url_of(sim, sim.conversation_uuids[2]),
        headers={"Authorization": "Basic sim-token"},
        timeout=10,
    )
    assert reply.status_code == 401


@pytest.mark.parametrize("segment", [str(uuid.UUID(int=7, version=4)), "not-a-uuid", "123"])
def test_404_conversation_not_found(sim: Simulator, segment: str) -> None:
    reply = get(sim, segment)
    assert reply.status_code == 404
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"success": False, "message": "Conversation not found."}


@pytest.mark.parametrize(
    "path", ["/", "/api/v1/sessions/x", "/api/v1/conversations/x/calls", "/api/v2/conversations"]
)
def test_404_other_paths_are_json(sim: Simulator, path: str) -> None:
    reply = requests.get(sim.base_url + path, headers={"Authorization": "Bearer x"}, timeout=10)
    assert reply.status_code == 404
    assert reply.json()["success"] is False


def test_405_for_other_methods(sim: Simulator) -> None:
    reply = requests.post(url_of(sim, sim.conversation_uuids[1]), timeout=10)
    assert reply.status_code == 405
    assert reply.json()["success"] is False


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"per_page": 101}, "per_page", "The per page field must not be greater than 100."),
        ({"per_page": 0}, "per_page", "The per page field must be at least 1."),
        ({"per_page": "ten"}, "per_page", "The per page field must be an integer."),
        ({"page": 0}, "page", "The page field must be at least 1."),
        ({"page": "1.5"}, "page", "The page field must be an integer."),
        ({"status": "done"}, "status", "The selected status is invalid."),
        ({"type": "video"}, "type", "The selected type is invalid."),
        ({"sort_by": "uuid"}, "sort_by", "The selected sort by is invalid."),
        ({"sort_dir": "up"}, "sort_dir", "The selected sort dir is invalid."),
    ],
)
def test_422_laravel_validation(
    sim: Simulator, params: dict[str, Any], field: str, message: str
) -> None:
    reply = get(sim, sim.conversation_uuids[2], **params)
    assert reply.status_code == 422
    assert reply.json() == {"success": False, "message": message, "errors": {field: [message]}}


def test_422_several_fields(sim: Simulator) -> None:
    body = get(sim, sim.conversation_uuids[2], per_page=500, status="done", type="x").json()
    assert body["message"] == (
        "The per page field must not be greater than 100. (and 2 more errors)"
    )
    assert set(body["errors"]) == {"per_page", "status", "type"}


def test_empty_parameters_mean_defaults(sim: Simulator) -> None:
    reply = get(sim, sim.conversation_uuids[4], page="", per_page="", status="", sort_by="")
    assert reply.status_code == 200
    assert reply.json()["data"]["per_page"] == 15


def test_auth_is_checked_before_404_and_422(sim: Simulator) -> None:
    assert get(sim, "nope", token="bad").status_code == 401
    assert get(sim, sim.conversation_uuids[1], token="bad", per_page=500).status_code == 401
    assert get(sim, "nope", per_page=500).status_code == 404


# --- deterministic faults ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "401"])
def test_fail_next_status_kinds(fresh: Simulator, kind: str) -> None:
    conversation = fresh.conversation_uuids[1]
    fresh.fail_next(kind, 2)
    for _ in range(2):
        reply = get(fresh, conversation)
        assert reply.status_code == int(kind)
        if kind in ("500", "502", "503"):
            assert reply.headers["Content-Type"].startswith("text/html")
            assert f"<title>{kind} " in reply.text
        else:
            assert reply.json()["success"] is False
    assert get(fresh, conversation).status_code == 200
    assert [r.status for r in fresh.requests] == [int(kind), int(kind), 200]


def test_fail_next_invalid_json(fresh: Simulator) -> None:
    fresh.fail_next("invalid_json")
    reply = get(fresh, fresh.conversation_uuids[1])
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.content.startswith(b'{"success":true')
    with pytest.raises(ValueError):
        json.loads(reply.content)
    assert get(fresh, fresh.conversation_uuids[1]).json()["success"] is True


def test_fail_next_bad_envelope(fresh: Simulator) -> None:
    fresh.fail_next("bad_envelope", 3)
    for _ in range(3):
        reply = get(fresh, fresh.conversation_uuids[1])
        assert reply.status_code == 200
        body = reply.json()  # valid JSON ...
        page = body.get("data")
        is_envelope = (
            body.get("success") is True
            and isinstance(page, dict)
            and {"current_page", "total", "last_page", "per_page", "data"} <= set(page)
        )
        assert not is_envelope  # ... that is not the envelope
    assert list(get(fresh, fresh.conversation_uuids[1]).json()["data"]) == PAGE_KEYS


def test_fail_next_html200(fresh: Simulator) -> None:
    fresh.fail_next("html200")
    reply = get(fresh, fresh.conversation_uuids[1])
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.text.startswith("<!DOCTYPE html>")


def test_fail_next_drop(fresh: Simulator) -> None:
    fresh.fail_next("drop")
    with pytest.raises(requests.ConnectionError):
        get(fresh, fresh.conversation_uuids[1])
    assert get(fresh, fresh.conversation_uuids[1]).status_code == 200
    assert [r.status for r in fresh.requests] == [0, 200]


def test_fail_next_stall(fresh: Simulator) -> None:
    fresh.stall_seconds = 1.0
    fresh.fail_next("stall")
    url = url_of(fresh, fresh.conversation_uuids[1])
    with pytest.raises(requests.Timeout):
        requests.get(url, headers={"Authorization": "Bearer sim-token"}, timeout=0.2)
    started = time.monotonic()
    assert get(fresh, fresh.conversation_uuids[1]).status_code == 200
    assert time.monotonic() - started < 0.5  # only the next request stalled


def test_fail_next_matches_conversation_and_page(fresh: Simulator) -> None:
    first, second = fresh.conversation_uuids[1], fresh.conversation_uuids[2]
    fresh.fail_next("503", conversation=first, page=2)
    assert get(fresh, first).status_code == 200  # page 1
    assert get(fresh, second, page=2).status_code == 200  # other conversation
    assert get(fresh, first, page=2).status_code == 503
    assert get(fresh, first, page=2).status_code == 200  # used up
    fresh.fail_next("429", page=1)
    assert get(fresh, second, page=2).status_code == 200
    assert get(fresh, second).status_code == 429  # no page parameter means page 1


def test_fail_next_rejects_bad_arguments(fresh: Simulator) -> None:
    with pytest.raises(ValueError, match="kind"):
        fresh.fail_next("418")
    with pytest.raises(ValueError):
        fresh.fail_next("500", 0)


# --- probabilistic faults and latency ------------------------------------------------------
def test_rate_limit_sends_retry_after(fresh: Simulator) -> None:
    fresh.rate_limit, fresh.retry_after = 1.0, 7
    reply = get(fresh, fresh.conversation_uuids[1])
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "7"
    assert reply.json() == {"success": False, "message": "Too Many Attempts."}
    fresh.rate_limit = 0.0
    assert get(fresh, fresh.conversation_uuids[1]).status_code == 200


def test_rate_limit_probability(fresh: Simulator) -> None:
    fresh.rate_limit = 0.5
    statuses = Counter(get(fresh, fresh.conversation_uuids[0]).status_code for _ in range(40))
    assert set(statuses) == {200, 429}
    assert 8 <= statuses[429] <= 32


def test_server_error_knob_sends_html(fresh: Simulator) -> None:
    fresh.server_error = 1.0
    replies = [get(fresh, fresh.conversation_uuids[0]) for _ in range(12)]
    assert {r.status_code for r in replies} <= {500, 502, 503}
    assert len({r.status_code for r in replies}) >= 2
    assert all(r.headers["Content-Type"].startswith("text/html") for r in replies)
    assert all("nginx" in r.text for r in replies)


def test_drop_knob(fresh: Simulator) -> None:
    fresh.drop = 1.0
    with pytest.raises(requests.ConnectionError):
        get(fresh, fresh.conversation_uuids[0])
    fresh.drop = 0.0
    assert get(fresh, fresh.conversation_uuids[0]).status_code == 200


def test_stall_knob(fresh: Simulator) -> None:
    fresh.stall, fresh.stall_seconds = 1.0, 0.3
    started = time.monotonic()
    assert get(fresh, fresh.conversation_uuids[0]).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_latency_is_concurrent(fresh: Simulator) -> None:
    fresh.latency = 0.3
    conversation = fresh.conversation_uuids[1]
    statuses: list[int] = []

    def one() -> None:
        statuses.append(get(fresh, conversation).status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert statuses == [200] * 8
    assert 0.3 <= elapsed < 1.2  # 8 x 0.3 s in series would take 2.4 s


# --- drift and mutations -------------------------------------------------------------------
def test_drift_adds_and_touches(fresh: Simulator) -> None:
    conversation = fresh.conversation_uuids[1]  # 100 sessions
    before = {r["uuid"]: r for r in fresh.ground_truth(conversation)}
    newest_before = max(micros(r["updated_at"]) for r in before.values())
    fresh.drift = 3
    first = get(fresh, conversation, per_page=10).json()["data"]
    second = get(fresh, conversation, per_page=10).json()["data"]
    assert (first["total"], second["total"]) == (103, 106)
    assert second["last_page"] == 11
    after = fresh.ground_truth(conversation)
    assert len(after) == 106
    added = [r for r in after if r["uuid"] not in before]
    assert len(added) == 6
    assert all(r["created_at"] == r["started_at"] for r in added)
    # the newest sessions lead the default started_at desc order
    assert second["data"][0]["uuid"] == max(added, key=lambda r: micros(r["started_at"]))["uuid"]
    changed = [r for r in after if micros(r["updated_at"]) > newest_before]
    assert 6 <= len(changed) <= 12  # 6 added, up to 6 touched (some touches hit new ones)
    touched_old = [r for r in after if r["uuid"] in before and r != before[r["uuid"]]]
    assert all(micros(r["updated_at"]) > newest_before for r in touched_old)


def test_mutations_invalidate_cached_pages(fresh: Simulator) -> None:
    conversation = fresh.conversation_uuids[2]  # 40 sessions
    assert get(fresh, conversation).json()["data"]["total"] == 40  # fills the cache
    added = fresh.add_sessions(conversation, 5)
    assert len(added) == 5
    page = get(fresh, conversation, per_page=100).json()["data"]
    assert page["total"] == 45
    assert [r["uuid"] for r in page["data"][:5]] == added[::-1]  # newest first
    rows = {r["uuid"]: r for r in page["data"]}
    created = [micros(rows[u]["created_at"]) for u in added]
    assert created == sorted(set(created))  # strictly increasing
    for u in added:
        assert rows[u]["created_at"] == rows[u]["started_at"] == rows[u]["updated_at"]
        assert fresh.tags()[u][0] == "active"

    touched = fresh.touch_sessions(conversation, 4)
    assert len(set(touched)) == 4
    by_update = get(fresh, conversation, per_page=4, sort_by="updated_at").json()["data"]["data"]
    assert {r["uuid"] for r in by_update} == set(touched)

    deleted = fresh.delete_sessions(conversation, 3)
    assert get(fresh, conversation).json()["data"]["total"] == 42
    remaining = {r["uuid"] for r in fetch_all(fresh, conversation)}
    assert not remaining & set(deleted)
    assert not set(fresh.tags()) & set(deleted)

    new = fresh.add_conversation(7)
    assert fresh.conversation_uuids[-1] == new
    assert get(fresh, new).json()["data"]["total"] == 7


def test_touch_ends_some_open_sessions_and_keeps_invariants() -> None:
    sim = Simulator(seed=9, sizes=(300,))
    conversation = sim.conversation_uuids[0]
    sim.add_sessions(conversation, 40)
    touched = set(sim.touch_sessions(conversation, 40))
    rows = [r for r in sim.ground_truth(conversation) if r["uuid"] in touched]
    tags = sim.tags()
    ended = [r for r in rows if r["ended_at"] is not None]
    assert ended  # one in four open sessions ends when touched
    for row in rows:
        assert row["updated_at"] == row["last_activity_at"]
        status = tags[row["uuid"]][0]
        assert (status == "active") == (row["ended_at"] is None)
        if row["ended_at"] is not None:
            assert status == "completed"
            assert row["ended_at"] == row["last_activity_at"]
        check_invariants(row)


# --- determinism and generation ------------------------------------------------------------
def test_same_seed_same_data_different_seed_different_data() -> None:
    one = Simulator(seed=5, sizes=(3, 40))
    two = Simulator(seed=5, sizes=(3, 40))
    _ = two.ground_truth(two.conversation_uuids[1])  # generate in another order: same result
    assert one.conversation_uuids == two.conversation_uuids
    assert one.ground_truth() == two.ground_truth()
    assert one.tags() == two.tags()
    other = Simulator(seed=6, sizes=(3, 40))
    assert other.conversation_uuids != one.conversation_uuids
    assert {r["uuid"] for r in other.ground_truth()}.isdisjoint(
        r["uuid"] for r in one.ground_truth()
    )


def test_generation_is_lazy_and_fast() -> None:
    started = time.perf_counter()
    sim = Simulator(seed=1, sizes=(1000,) * 60)
    assert time.perf_counter() - started < 0.5
    assert len(sim.conversation_uuids) == 60
    started = time.perf_counter()
    sim2 = Simulator(seed=1, sizes=(1000,) * 10)
    sim2.generate_all()
    assert time.perf_counter() - started < 2.0
    assert len(sim2.tags()) == 10_000


# --- production-like data ------------------------------------------------------------------
def check_invariants(row: dict[str, Any]) -> None:
    t = {name: None if row[name] is None else micros(row[name]) for name in TIMESTAMPS}
    assert t["started_at"] <= t["last_activity_at"]
    if t["ended_at"] is not None:
        assert t["last_activity_at"] <= t["ended_at"]
        if t["evaluated_at"] is not None:
            assert t["ended_at"] <= t["evaluated_at"]
        if t["summary_generated_at"] is not None:
            assert t["ended_at"] <= t["summary_generated_at"]
    assert t["created_at"] <= t["started_at"]
    assert t["started_at"] - t["created_at"] < 3_000_000  # up to 2 s, then floored to its format
    assert all(t["updated_at"] >= v for v in t.values() if v is not None)


def test_data_invariants_and_statuses(big: Simulator) -> None:
    rows = big.ground_truth()
    tags = big.tags()
    assert len(rows) == sum(DEFAULT_SIZES) == len(tags)
    assert len({r["uuid"] for r in rows}) == len(rows)
    statuses = Counter(tags[r["uuid"]][0] for r in rows)
    assert set(statuses) == {"active", "completed", "timed_out"}
    zero_length = 0
    for row in rows:
        assert list(row)[:16] == DOCUMENTED_KEYS
        assert uuid.UUID(row["uuid"]).version == 4
        check_invariants(row)
        status, kind = tags[row["uuid"]]
        if status == "active":
            assert row["ended_at"] is None and row["evaluated_at"] is None
            assert row["summary"] is None and row["summary_generated_at"] is None
        else:
            assert row["ended_at"] is not None
            zero_length += row["ended_at"] == row["started_at"]
        assert (row["summary"] is None) == (row["summary_generated_at"] is None)
        if kind == "text":
            assert row["call_uuid"] is None
    assert zero_length >= 5
    completed = [r for r in rows if tags[r["uuid"]][0] == "completed"]
    evaluated = sum(r["evaluated_at"] is not None for r in completed) / len(completed)
    summarized = sum(r["summary"] is not None for r in completed) / len(completed)
    assert 0.75 < evaluated < 0.97 and 0.7 < summarized < 0.95
    voice = [r for r in rows if tags[r["uuid"]][1] == "voice"]
    assert sum(r["call_uuid"] is not None for r in voice) / len(voice) > 0.85
    durations = [
        micros(r["ended_at"]) - micros(r["started_at"]) for r in completed if r["ended_at"]
    ]
    assert max(durations) > 3600 * 10**6 and 0 < min(d for d in durations if d) < 10 * 10**6


def test_timestamp_formats_vary_and_are_exact(big: Simulator) -> None:
    strings = [r[name] for r in big.ground_truth() for name in TIMESTAMPS if r[name]]
    shapes = Counter(
        "offset"
        if re.search(r"[+-]\d\d:\d\d$", s)
        else "micro"
        if re.search(r"\.\d{6}Z$", s)
        else "milli"
        if re.search(r"\.\d{3}Z$", s)
        else "seconds"
        if re.search(r":\d\dZ$", s)
        else "other"
        for s in strings
    )
    assert shapes["other"] == 0
    assert all(shapes[k] > len(strings) * 0.05 for k in ("offset", "micro", "milli", "seconds"))
    offsets = {s[-6:] for s in strings if re.search(r"[+-]\d\d:\d\d$", s)}
    assert {"+03:00", "-05:00", "+05:30"} <= offsets
    # every served string is exactly the internal instant, to the microsecond: the generator's
    # own dataset for the same seed and sizes serves what ``big`` serves, and holds the instants
    data = Dataset(big.seed, big.sizes, lambda: END_US)
    assert data.ground_truth(None, None, None) == big.ground_truth()
    for conv in data.conversations.values():
        for session in conv.sessions:
            served = json.loads(session.body)
            for name in TIMESTAMPS:
                value = session.times[name]
                assert (served[name] is None) == (value is None)
                if value is not None:
                    assert micros(served[name]) == value


def test_contacts_summaries_tasks_and_extras(big: Simulator) -> None:
    rows = big.ground_truth()
    n = len(rows)
    contacts = [r["contact"] for r in rows if r["contact"] is not None]
    assert 0.05 < 1 - len(contacts) / n < 0.15
    assert all(list(c) == ["uuid", "name", "surname", "phone_number", "email"] for c in contacts)
    assert any(c["email"] is None for c in contacts)
    assert any(c["phone_number"] is None for c in contacts)
    names = {c["name"] for c in contacts} | {c["surname"] for c in contacts if c["surname"]}
    assert {"Zoë", "Çağrı", "Øyvind"} & names and any(not name.isascii() for name in names)
    assert any("\u4e00" <= ch <= "\u9fff" for name in names for ch in name)  # CJK

    summaries = [r["summary"] for r in rows if r["summary"] is not None]
    assert all(100 <= len(s) <= 400 for s in summaries)
    assert any('"' in s for s in summaries) and any("\n" in s for s in summaries)
    assert any("\\" in s for s in summaries) and any(not s.isascii() for s in summaries)

    task_counts = Counter(min(len(r["task_uuids"]), 2) for r in rows)
    assert 0.3 < task_counts[0] / n < 0.5 and task_counts[1] > 0 and task_counts[2] > 0
    assert any(r["campaign_uuid"] is None for r in rows)
    assert any(r["listing_uuid"] is None for r in rows)
    for conversation in big.conversation_uuids[2:]:
        agents = {r["agent_uuid"] for r in big.ground_truth(conversation)}
        assert 1 <= len(agents) <= 6

    extra_types: dict[str, set[type]] = {}
    with_extras = 0
    for row in rows:
        extra = list(row)[16:]
        with_extras += bool(extra)
        for key in extra:
            extra_types.setdefault(key, set()).add(type(row[key]))
    assert 0.05 < with_extras / n < 0.15
    assert {"channel", "sentiment"} <= set(extra_types)
    assert all(len(kinds) == 1 for kinds in extra_types.values()), extra_types


# --- the server itself ---------------------------------------------------------------------
def test_request_records(fresh: Simulator) -> None:
    conversation = fresh.conversation_uuids[1]
    get(fresh, conversation, page=2, per_page=10)
    get(fresh, conversation.upper(), page="x")
    requests.get(fresh.base_url + "/elsewhere", timeout=10)
    assert fresh.request_count == 3
    assert fresh.requests[0] == RequestRecord(conversation, {"page": "2", "per_page": "10"}, 200, 2)
    assert fresh.requests[1] == RequestRecord(conversation, {"page": "x"}, 422, None)
    assert fresh.requests[2] == RequestRecord(None, {}, 404, None)
    fresh.reset_requests()
    assert fresh.request_count == 0 and fresh.requests == []


def test_keep_alive_reuses_one_connection(sim: Simulator) -> None:
    host, port = sim.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        path = f"/api/v1/conversations/{sim.conversation_uuids[3]}/sessions?per_page=100"
        sockets = []
        for _ in range(3):
            connection.request("GET", path, headers={"Authorization": "Bearer sim-token"})
            reply = connection.getresponse()
            body = reply.read()
            assert reply.status == 200
            assert reply.getheader("Connection") == "keep-alive"
            assert len(body) == int(reply.getheader("Content-Length"))
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is sockets[2] is not None
    finally:
        connection.close()


# --- the simulated clock ---------------------------------------------------------------------
def date_of(reply: requests.Response | http.client.HTTPResponse) -> datetime:
    headers = reply.headers
    dates = headers.get_all("Date") if hasattr(headers, "get_all") else None
    if dates is not None:
        assert len(dates) == 1, dates  # only the simulator's own Date header
    header = headers["Date"]
    assert header.endswith(" GMT"), header
    return parsedate_to_datetime(header)


def latest_instant(rows: list[dict[str, Any]]) -> datetime:
    return max(instant(r[name]) for r in rows for name in TIMESTAMPS if r[name] is not None)


def test_clock_starts_at_data_end_and_moves_on() -> None:
    sim = Simulator(seed=7, sizes=(20,))
    assert sim.now() == DATA_END and sim.now().tzinfo is not None
    assert latest_instant(sim.ground_truth()) <= DATA_END
    with sim:
        host, port = sim.base_url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            path = f"/api/v1/conversations/{sim.conversation_uuids[0]}/sessions"
            connection.request("GET", path, headers={"Authorization": "Bearer sim-token"})
            reply = connection.getresponse()
            reply.read()
            first = date_of(reply)  # http.client: sees every Date header sent
        finally:
            connection.close()
        assert DATA_END <= first <= DATA_END + timedelta(seconds=3)
        assert DATA_END < sim.now() <= first + timedelta(seconds=1)
        time.sleep(1.05)
        second = date_of(get(sim, sim.conversation_uuids[0]))
        assert first < second <= DATA_END + timedelta(seconds=5)
        # send_error (an unsupported method, a bad request line) uses the same clock
        error = requests.request("OPTIONS", f"{sim.base_url}/", timeout=10)
        assert error.status_code == 501
        assert second <= date_of(error) <= DATA_END + timedelta(seconds=5)


def test_every_timestamp_is_at_or_before_the_date(sim: Simulator) -> None:
    for conversation in sim.conversation_uuids[1:]:
        reply = get(sim, conversation, per_page=100)
        assert latest_instant(reply.json()["data"]["data"]) <= date_of(reply)
    reply = get(sim, sim.conversation_uuids[-1])
    assert latest_instant(sim.ground_truth()) <= date_of(reply)


def test_mutations_use_the_simulated_clock(fresh: Simulator) -> None:
    conversation = fresh.conversation_uuids[1]
    previous = latest_instant(fresh.ground_truth())
    for step in range(3):
        before = {r["uuid"]: r for r in fresh.ground_truth(conversation)}
        if step % 2 == 0:
            changed = set(fresh.add_sessions(conversation, 4))
        else:
            changed = set(fresh.touch_sessions(conversation, 4))
        rows = [r for r in fresh.ground_truth(conversation) if r["uuid"] in changed]
        new = sorted(micros(r["updated_at"]) for r in rows)
        assert len(set(new)) == len(new) == 4  # strictly increasing, microsecond resolution
        assert min(new) > micros(previous.isoformat())
        for row in rows:
            check_invariants(row)
            if row["uuid"] not in before:
                assert row["created_at"] == row["started_at"] == row["updated_at"]
        previous = latest_instant(fresh.ground_truth())
        assert previous == instant(max(rows, key=lambda r: micros(r["updated_at"]))["updated_at"])
        served = date_of(get(fresh, conversation))
        assert previous <= served <= DATA_END + timedelta(seconds=10)


def test_drift_pages_are_consistent_with_their_date(fresh: Simulator) -> None:
    conversation = fresh.conversation_uuids[2]
    fresh.drift = 2
    for page in (1, 2, 3):
        reply = get(fresh, conversation, per_page=10, page=page, sort_by="updated_at")
        rows = reply.json()["data"]["data"]
        assert rows and latest_instant(rows) <= date_of(reply)
        # updated_at desc: the page starts with rows drift wrote, after the data's end
        assert page > 1 or instant(rows[0]["updated_at"]) > DATA_END


def test_open_sessions_are_the_ones_running_at_data_end(big: Simulator) -> None:
    tags = big.tags()
    rows = big.ground_truth()
    open_rows = [r for r in rows if r["ended_at"] is None]
    assert open_rows
    assert all(tags[r["uuid"]][0] == "active" for r in open_rows)
    assert len(open_rows) <= 10  # a handful, not a spike at the end of 3,550 sessions
    for row in open_rows:
        assert row["evaluated_at"] is None and row["summary"] is None
        assert row["summary_generated_at"] is None
        started = instant(row["started_at"])
        assert DATA_END - timedelta(hours=6) < started < DATA_END  # sessions last <= 5 h
        assert started <= instant(row["last_activity_at"]) <= DATA_END
        assert instant(row["updated_at"]) <= DATA_END
    assert latest_instant(rows) <= DATA_END
    # ended sessions start all over the span, up to its last hours, and end by DATA_END
    ended = [r for r in rows if r["ended_at"] is not None]
    starts = [instant(r["started_at"]) for r in ended]
    assert min(starts) < DATA_END - timedelta(days=295)
    assert max(starts) > DATA_END - timedelta(days=1)
    assert all(instant(r["ended_at"]) <= DATA_END for r in ended)


def concurrency_at(rows: list[dict[str, Any]], at: datetime) -> int:
    """Sessions started by ``at`` and not ended by then (open ones run on)."""
    return concurrency(intervals(rows), at)


def intervals(rows: list[dict[str, Any]]) -> list[tuple[datetime, datetime | None]]:
    return [
        (instant(r["started_at"]), None if r["ended_at"] is None else instant(r["ended_at"]))
        for r in rows
    ]


def concurrency(spans: list[tuple[datetime, datetime | None]], at: datetime) -> int:
    return sum(start <= at and (end is None or end > at) for start, end in spans)


def test_open_sessions_scale_with_the_arrival_rate() -> None:
    sizes = (0, 50, 150, 200, 250, 1000, 1000, 1000, 1000, 2500, 3000, 10_000)
    sim = Simulator(seed=21, sizes=sizes)
    tags = sim.tags()
    counts = []
    for conversation in sim.conversation_uuids:
        rows = sim.ground_truth(conversation)
        open_rows = [r for r in rows if r["ended_at"] is None]
        assert all(tags[r["uuid"]][0] == "active" for r in open_rows)
        assert len(open_rows) == concurrency_at(rows, DATA_END)  # open == running at the end
        for row in rows:
            check_invariants(row)
        counts.append(len(open_rows))
    by_size = dict(zip(sizes, counts, strict=False))
    assert by_size[0] == 0 and by_size[50] <= 1
    assert all(1 <= n <= 3 for size, n in zip(sizes, counts, strict=True) if 200 <= size <= 1000)
    assert 1 <= by_size[2500] <= 5 and 1 <= by_size[3000] <= 5
    assert 1 <= by_size[10_000] <= 12


@pytest.mark.parametrize(("seed", "sizes"), [(7, (0, 1, 99, 100, 101, 250, 2500)), (0, None)])
def test_big_conversations_always_have_an_open_session(
    seed: int, sizes: tuple[int, ...] | None
) -> None:
    """The other test modules (conftest: seed 7; the default sizes) rely on this."""
    sim = Simulator(seed=seed, sizes=sizes)
    tags = sim.tags()
    for size, conversation in zip(sim.sizes, sim.conversation_uuids, strict=True):
        statuses = {tags[r["uuid"]][0] for r in sim.ground_truth(conversation)}
        if size >= 200:
            assert statuses == {"active", "completed", "timed_out"}, size


def test_open_sessions_do_not_spike_concurrency(big: Simulator) -> None:
    spans = intervals(big.ground_truth(big.conversation_uuids[-1]))  # 3,000 sessions
    spans = [s for s in spans if s[0] > DATA_END - timedelta(days=31)]  # the last month
    earlier = [DATA_END - timedelta(minutes=15 * k) for k in range(1, 4 * 24 * 30)]
    peak_before = max(concurrency(spans, at) for at in earlier)
    assert 1 <= concurrency(spans, DATA_END) <= max(peak_before, 3)


def test_wall_clock_option() -> None:
    with pytest.raises(ValueError, match="clock"):
        Simulator(sizes=(1,), clock="lunar")
    with Simulator(seed=1, sizes=(3,), clock="wall") as sim:
        assert abs(sim.now() - datetime.now(timezone.utc)) < timedelta(seconds=2)
        added = sim.add_sessions(sim.conversation_uuids[0], 1)
        row = next(r for r in sim.ground_truth() if r["uuid"] in added)
        served = date_of(get(sim, sim.conversation_uuids[0]))
        assert instant(row["created_at"]) <= served
        assert abs(served - datetime.now(timezone.utc)) < timedelta(seconds=3)
    assert build_parser().parse_args(["--clock", "wall"]).clock == "wall"
    assert build_parser().parse_args([]).clock == "simulated"


def test_lifecycle() -> None:
    sim = Simulator(sizes=(1,))
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    sim.start()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.base_url)
        with pytest.raises(RuntimeError):
            sim.start()
    finally:
        sim.stop()
    sim.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = sim.base_url


def test_the_data_clock_continues_the_data_and_dates_at_or_after_every_instant() -> None:
    # The clock apart from the server: DATA_END until started, then DATA_END plus the elapsed
    # time; a Date header is rounded up to the second and never before the latest instant.
    clock = DataClock("simulated")
    assert clock.now() == DATA_END and clock.now_us() == END_US
    assert clock.http_date(END_US) == "Sun, 01 Nov 2026 00:00:00 GMT"
    assert clock.http_date(END_US + 1) == "Sun, 01 Nov 2026 00:00:01 GMT"
    assert clock.http_date(END_US + 3_600_000_000) == "Sun, 01 Nov 2026 01:00:00 GMT"
    clock.start()
    time.sleep(0.01)
    first = clock.now_us()
    assert END_US + 10_000 <= first < END_US + 5_000_000
    clock.start()  # a restart does not turn the clock back
    assert clock.now_us() >= first
    wall = DataClock("wall")
    assert abs(wall.now().timestamp() - time.time()) < 5
