"""The account's conversations (``GET /api/v1/conversations`` and ``/{uuid}``), over real HTTP.

Expected values are computed here from the sessions' ground truth, independently of the
simulator's listing code.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import requests

from mihu_frames.simulator import Simulator

SIZES = (0, 1, 99, 100, 101, 250, 40, 7, 3, 60, 0, 12)
CONVERSATION_KEYS = [
    "uuid",
    "agent_uuid",
    "channel",
    "status",
    "phone",
    "contact",
    "created_at",
    "updated_at",
    "last_message_at",
    "sessions_count",
]
EXTRA_KEYS = ["labels", "priority"]
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
CHANNELS = {"whatsapp", "web", "sms", "phone", "instagram"}


def instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    assert parsed.tzinfo is not None, text
    return parsed.astimezone(timezone.utc)


def listing(sim: Simulator, *, token: str = "sim-token", **params: Any) -> requests.Response:
    return requests.get(
        f"{sim.base_url}/api/v1/conversations",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def one(sim: Simulator, conversation: str, token: str = "sim-token") -> requests.Response:
    return requests.get(
        f"{sim.base_url}/api/v1/conversations/{conversation}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def list_all(sim: Simulator, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("per_page", 5)
    first = listing(sim, **params).json()["data"]
    rows = list(first["data"])
    for page in range(2, first["last_page"] + 1):
        rows += listing(sim, page=page, **params).json()["data"]["data"]
    return rows


def sort_key(row: dict[str, Any], key: str) -> tuple[bool, datetime]:
    value = instant(row[key])
    return value is None, value or datetime.min.replace(tzinfo=timezone.utc)


def expected_order(rows: list[dict[str, Any]], key: str, direction: str) -> list[str]:
    """Real instants, nulls last ascending and first descending, ties in creation order."""
    return [
        r["uuid"] for r in sorted(rows, key=lambda r: sort_key(r, key), reverse=direction == "desc")
    ]


def in_creation_order(sim: Simulator, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    position = {u: i for i, u in enumerate(sim.conversation_uuids)}
    return sorted(rows, key=lambda r: position[r["uuid"]])


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(seed=12, sizes=SIZES) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[Simulator]:
    with Simulator(seed=13, sizes=(4, 30, 0)) as running:
        yield running


# --- envelope, paging, the object ----------------------------------------------------------
def test_envelope_exact_shape(sim: Simulator) -> None:
    reply = listing(sim)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/json"
    body = reply.json()
    assert list(body) == ["success", "message", "data"]
    assert (body["success"], body["message"]) == (True, "Conversations retrieved successfully")
    page = body["data"]
    assert list(page) == PAGE_KEYS
    path = f"{sim.base_url}/api/v1/conversations"
    assert (page["current_page"], page["total"], page["last_page"], page["per_page"]) == (
        1,
        12,
        1,
        15,
    )
    assert (page["from"], page["to"], page["path"]) == (1, 12, path)
    assert page["next_page_url"] is None and page["last_page_url"] == path + "?page=1"
    for conversation in page["data"]:
        assert list(conversation) == CONVERSATION_KEYS + EXTRA_KEYS
    assert [c["uuid"] for c in page["data"]] == [c["uuid"] for c in sim.conversations_truth()]


@pytest.mark.parametrize("per_page", [1, 5, 11, 12, 100])
def test_pages_concatenate_to_the_truth(sim: Simulator, per_page: int) -> None:
    first = listing(sim, per_page=per_page).json()["data"]
    assert first["last_page"] == -(-12 // per_page)
    rows = list_all(sim, per_page=per_page)
    assert rows == sim.conversations_truth()
    beyond = listing(sim, per_page=per_page, page=first["last_page"] + 1).json()["data"]
    assert beyond["data"] == [] and (beyond["from"], beyond["to"]) == (None, None)
    if per_page == 5:
        second = listing(sim, per_page=5, page=2).json()["data"]
        assert (second["from"], second["to"]) == (6, 10)
        assert second["next_page_url"] == f"{sim.base_url}/api/v1/conversations?page=3"
        assert second["prev_page_url"] == f"{sim.base_url}/api/v1/conversations?page=1"


def test_default_order_is_created_at_desc_with_nulls_first(sim: Simulator) -> None:
    rows = sim.conversations_truth()
    assert [r["uuid"] for r in rows] == expected_order(rows, "created_at", "desc")
    empty = [r for r in rows if r["sessions_count"] == 0]
    assert len(empty) == 2 and rows[:2] == in_creation_order(sim, empty)


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", ["created_at", "updated_at"])
def test_sorting(sim: Simulator, sort_by: str, sort_dir: str) -> None:
    rows = list_all(sim, sort_by=sort_by, sort_dir=sort_dir)
    truth = in_creation_order(sim, sim.conversations_truth())
    assert [r["uuid"] for r in rows] == expected_order(truth, sort_by, sort_dir)
    assert rows == sim.conversations_truth(sort_by=sort_by, sort_dir=sort_dir)


def test_objects_are_derived_from_the_sessions(sim: Simulator) -> None:
    tags = sim.tags()
    by_uuid = {r["uuid"]: r for r in sim.conversations_truth()}
    assert set(by_uuid) == set(sim.conversation_uuids)
    for conversation in sim.conversation_uuids:
        row = by_uuid[conversation]
        sessions = sim.ground_truth(conversation)
        assert row["sessions_count"] == len(sessions)
        assert row["channel"] in CHANNELS
        assert isinstance(row["labels"], list) and isinstance(row["priority"], str)
        if not sessions:
            assert row["created_at"] is row["updated_at"] is row["last_message_at"] is None
            assert row["contact"] is row["phone"] is None and row["status"] == "closed"
            assert uuid.UUID(row["agent_uuid"]).version == 4
            continue
        assert instant(row["created_at"]) == min(instant(s["created_at"]) for s in sessions)
        assert instant(row["updated_at"]) == max(instant(s["updated_at"]) for s in sessions)
        assert instant(row["last_message_at"]) == max(
            instant(s["last_activity_at"]) for s in sessions
        )
        # the strings are the sessions' own, mixed formats and offsets included
        assert row["created_at"] in {s["created_at"] for s in sessions}
        assert row["updated_at"] in {s["updated_at"] for s in sessions}
        agents = Counter(s["agent_uuid"] for s in sessions)
        assert agents[row["agent_uuid"]] == max(agents.values())
        is_open = any(tags[s["uuid"]][0] == "active" for s in sessions)
        assert row["status"] == ("open" if is_open else "closed")
        assert is_open == any(s["ended_at"] is None for s in sessions)
        contacts = [s["contact"] for s in sessions if s["contact"] is not None]
        assert row["contact"] == (contacts[0] if contacts else None)
        assert row["phone"] == (contacts[0]["phone_number"] if contacts else None)
    statuses = {r["status"] for r in by_uuid.values()}
    assert statuses == {"open", "closed"}
    stamps = [r[k] for r in by_uuid.values() for k in ("created_at", "updated_at") if r[k]]
    assert any(re.search(r"[+-]\d\d:\d\d$", s) for s in stamps)
    assert any(s.endswith("Z") for s in stamps)


def test_the_listing_changes_no_session() -> None:
    plain = Simulator(seed=12, sizes=SIZES)
    listed = Simulator(seed=12, sizes=SIZES)
    listed.conversations_truth()
    assert listed.ground_truth() == plain.ground_truth()
    assert listed.conversations_truth() == plain.conversations_truth()
    assert Simulator(seed=14, sizes=SIZES).conversations_truth() != plain.conversations_truth()


# --- filters ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["channel", "status", "agent_uuid"])
def test_exact_filters(sim: Simulator, name: str) -> None:
    everything = sim.conversations_truth()
    for value in sorted({r[name] for r in everything}):
        expected = [r for r in everything if r[name] == value]
        assert (
            list_all(sim, **{name: value}) == expected == sim.conversations_truth(**{name: value})
        )
        first = listing(sim, **{name: value}).json()["data"]
        assert first["total"] == len(expected)


def test_phone_filter_matches_digits(sim: Simulator) -> None:
    everything = sim.conversations_truth()
    phones = [r["phone"] for r in everything if r["phone"]]
    assert phones
    phone = phones[0]
    expected = [r for r in everything if r["phone"] == phone]
    digits = re.sub(r"\D", "", phone)
    spaced = "+" + " ".join(digits[i : i + 3] for i in range(0, len(digits), 3))
    for query in (phone, digits, spaced):
        assert list_all(sim, phone=query) == expected
        assert sim.conversations_truth(phone=query) == expected
    assert list_all(sim, phone="+1 000 000 0000") == []
    assert list_all(sim, phone="no digits") == []


def test_filters_combine(sim: Simulator) -> None:
    everything = sim.conversations_truth()
    row = next(r for r in everything if r["status"] == "open")
    rows = list_all(sim, status="open", channel=row["channel"], agent_uuid=row["agent_uuid"])
    assert row in rows
    assert all(
        (r["status"], r["channel"], r["agent_uuid"]) == ("open", row["channel"], row["agent_uuid"])
        for r in rows
    )
    upper = list_all(sim, agent_uuid=row["agent_uuid"].upper())
    assert upper == [r for r in everything if r["agent_uuid"] == row["agent_uuid"]]
    assert listing(sim, channel="sms", status="").json()["data"]["total"] == sum(
        r["channel"] == "sms" for r in everything
    )  # an empty value is no filter


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"per_page": 101}, "per_page", "The per page field must not be greater than 100."),
        ({"per_page": 0}, "per_page", "The per page field must be at least 1."),
        ({"page": "x"}, "page", "The page field must be an integer."),
        ({"sort_by": "started_at"}, "sort_by", "The selected sort by is invalid."),
        ({"sort_dir": "up"}, "sort_dir", "The selected sort dir is invalid."),
        ({"status": "active"}, "status", "The selected status is invalid."),
        ({"channel": "fax"}, "channel", "The selected channel is invalid."),
        ({"agent_uuid": "agent-7"}, "agent_uuid", "The agent uuid field must be a valid UUID."),
    ],
)
def test_422(sim: Simulator, params: dict[str, Any], field: str, message: str) -> None:
    reply = listing(sim, **params)
    assert reply.status_code == 422
    assert reply.json() == {"success": False, "message": message, "errors": {field: [message]}}


def test_truth_refuses_what_the_listing_refuses(sim: Simulator) -> None:
    for bad in ({"status": "active"}, {"channel": "fax"}, {"sort_by": "started_at"}):
        with pytest.raises(ValueError):
            sim.conversations_truth(**bad)


def test_one_conversation(sim: Simulator) -> None:
    truth = {r["uuid"]: r for r in sim.conversations_truth()}
    for conversation in sim.conversation_uuids[:4]:
        reply = one(sim, conversation.upper())
        assert reply.status_code == 200
        body = reply.json()
        assert list(body) == ["success", "message", "data"]
        assert body["message"] == "Conversation retrieved successfully"
        assert body["data"] == truth[conversation]
    for missing in (str(uuid.UUID(int=9, version=4)), "not-a-uuid"):
        reply = one(sim, missing)
        assert reply.status_code == 404
        assert reply.json() == {"success": False, "message": "Conversation not found."}


@pytest.mark.parametrize("token", ["", "wrong"])
def test_401(sim: Simulator, token: str) -> None:
    for reply in (listing(sim, token=token), one(sim, sim.conversation_uuids[1], token=token)):
        assert reply.status_code == 401
        assert reply.json() == {"success": False, "message": "Unauthenticated."}
    assert listing(sim, token=token, per_page=500).status_code == 401  # auth before validation


# --- changes between two listings --------------------------------------------------------------
def test_added_conversations_and_sessions_show_up(fresh: Simulator) -> None:
    before = list_all(fresh)
    assert len(before) == 3
    added = fresh.add_conversation(6)
    after = list_all(fresh)
    assert len(after) == 4 and added in {r["uuid"] for r in after}
    assert after == fresh.conversations_truth()
    assert one(fresh, added).json()["data"]["sessions_count"] == 6

    target = fresh.conversation_uuids[1]
    new = fresh.add_sessions(target, 2)
    row = one(fresh, target).json()["data"]
    assert row["sessions_count"] == 32 and row["status"] == "open"
    newest = next(s for s in fresh.ground_truth(target) if s["uuid"] == new[-1])
    assert row["updated_at"] == row["last_message_at"] == newest["updated_at"]
    by_update = list_all(fresh, sort_by="updated_at")
    assert by_update[0]["updated_at"] is None  # the empty conversation: nulls first descending
    assert by_update[1]["uuid"] == target
    assert list_all(fresh, status="open")[0]["uuid"] == target

    empty = fresh.conversation_uuids[2]
    fresh.add_sessions(empty, 1)
    row = one(fresh, empty).json()["data"]
    assert row["sessions_count"] == 1 and row["created_at"] is not None


def test_faults_latency_and_limits_apply_to_the_listing(fresh: Simulator) -> None:
    fresh.fail_next("503", page=2)
    assert listing(fresh, per_page=1).status_code == 200
    assert listing(fresh, per_page=1, page=2).status_code == 503
    assert listing(fresh, per_page=1, page=2).status_code == 200
    fresh.fail_next("bad_envelope", 2)
    bodies = [listing(fresh).json() for _ in range(2)]
    assert all("current_page" not in (b.get("data") or {}) for b in bodies)
    assert bodies[1]["message"] == "Conversations retrieved successfully"
    fresh.fail_next("429", conversation=fresh.conversation_uuids[0])
    assert one(fresh, fresh.conversation_uuids[0]).status_code == 429

    fresh.configure(rate_limit_max=3, rate_window=60.0)
    replies = [
        listing(fresh),
        one(fresh, fresh.conversation_uuids[0]),
        listing(fresh),
        listing(fresh),
    ]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in replies] == ["2", "1", "0", "0"]

    records = [r for r in fresh.requests if r.endpoint == "conversations"]
    assert [r.page for r in records[:3]] == [1, 2, 2]
    assert {r.endpoint for r in fresh.requests} == {"conversations", "conversation"}
    assert [r.conversation for r in fresh.requests if r.endpoint == "conversation"] == [
        fresh.conversation_uuids[0]
    ] * 2
