"""The account's conversations, as ``GET /api/v1/conversations`` lists them.

The endpoint is not in our seed documentation; its shape follows what a real public client (the
n8n community node) sends and reads. A conversation object is derived from the conversation's
sessions as they are now, so it moves when they change, and never changes them:

- ``uuid``; ``agent_uuid``: the agent of most of its sessions (ties: the earliest assigned);
- ``channel``: ``whatsapp``, ``web``, ``sms``, ``phone`` or ``instagram``, drawn once from the
  conversation's UUID (not from the data's generators, so the sessions stay as they were);
- ``status``: ``open`` while one of its sessions is open (``active``), else ``closed``;
- ``contact``: the contact of its first session that has one (the session contact object), or
  null; ``phone``: that contact's ``phone_number`` (may be null);
- ``created_at``: its first session's ``created_at``; ``updated_at``: its latest session
  ``updated_at``; ``last_message_at``: its latest ``last_activity_at`` (the strings as served,
  so mixed formats and offsets; null without sessions);
- ``sessions_count``;
- two undocumented fields, ``labels`` (a list of strings) and ``priority`` (a string), drawn from
  the UUID like ``channel``, so a client can prove it keeps fields it does not know.

Filters are applied by the server: ``phone`` matches when its digits equal the phone's digits
(``+90 532 …`` finds ``+90532…``), ``agent_uuid`` case-insensitively, ``channel`` and ``status``
exactly. Sorting is by ``created_at`` (default) or ``updated_at``, ``desc`` by default, on the
real instants; nulls last ascending and first descending, ties in creation order (as sessions).

A conversation's record is built once and cached on it until its sessions change
(``Conversation.changed``). Call these functions with the dataset's lock held or let them take it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from random import Random
from typing import Any

from mihu_frames.simulator.data import CHANNELS, ENCODER, Conversation, Dataset

#: Values of the listing's ``status`` filter and field.
CONVERSATION_STATUSES: tuple[str, ...] = ("open", "closed")
#: Keys the listing sorts by.
LISTING_SORT_KEYS: tuple[str, ...] = ("created_at", "updated_at")
_CHANNEL_WEIGHTS = (40, 25, 10, 15, 10)  # whatsapp, web, sms, phone, instagram
_LABELS = ("vip", "follow-up", "new-lead", "b2b", "spam", "returning")
_PRIORITIES = ("low", "normal", "normal", "high")
_NON_DIGITS = re.compile(r"\D")


@dataclass(frozen=True)
class ConversationRecord:
    """One conversation as the listing serves it: the JSON body and what filters and sorts use."""

    uuid: str
    index: int
    agent_uuid: str | None
    channel: str
    status: str
    phone_digits: str | None
    created_us: int | None
    updated_us: int | None
    body: bytes


def record(conv: Conversation) -> ConversationRecord:
    """The conversation's listing record (cached until its sessions change)."""
    cached = conv.view
    if not isinstance(cached, ConversationRecord):
        cached = conv.view = _build(conv)
    return cached


def _build(conv: Conversation) -> ConversationRecord:
    sessions = conv.sessions
    rng = Random(f"mihu_frames.simulator.listing:{conv.uuid}")
    channel = rng.choices(CHANNELS, weights=_CHANNEL_WEIGHTS)[0]
    labels = rng.sample(_LABELS, rng.choice((0, 0, 1, 1, 2)))
    priority = rng.choice(_PRIORITIES)

    counts = Counter(s.agent for s in sessions)
    agent = max(conv.agents, key=lambda a: counts[a]) if conv.agents else None
    contact: dict[str, Any] | None = None
    for s in sessions:
        if s.contact is not None:
            contact = json.loads(s.contact[1])
            break
    phone = contact["phone_number"] if contact else None
    created = updated = last = None
    if sessions:
        first = min(sessions, key=lambda s: (s.times["created_at"] or 0, s.seq))
        latest = max(sessions, key=lambda s: (s.times["updated_at"] or 0, s.seq))
        talked = max(sessions, key=lambda s: (s.times["last_activity_at"] or 0, s.seq))
        created = (first.times["created_at"], first.tokens["created_at"])
        updated = (latest.times["updated_at"], latest.tokens["updated_at"])
        last = (talked.times["last_activity_at"], talked.tokens["last_activity_at"])
    status = "open" if any(s.status == "active" for s in sessions) else "closed"
    payload = {
        "uuid": conv.uuid,
        "agent_uuid": agent,
        "channel": channel,
        "status": status,
        "phone": phone,
        "contact": contact,
        "created_at": _text(created),
        "updated_at": _text(updated),
        "last_message_at": _text(last),
        "sessions_count": len(sessions),
        "labels": labels,
        "priority": priority,
    }
    return ConversationRecord(
        uuid=conv.uuid,
        index=conv.index,
        agent_uuid=agent,
        channel=channel,
        status=status,
        phone_digits=None if phone is None else _NON_DIGITS.sub("", phone),
        created_us=None if created is None else created[0],
        updated_us=None if updated is None else updated[0],
        body=ENCODER.encode(payload).encode("utf-8"),
    )


def _text(instant: tuple[int | None, str] | None) -> str | None:
    """The served string of a (instant, JSON token) pair, or None."""
    if instant is None or instant[1] == "null":
        return None
    return instant[1][1:-1]


def check_filters(
    *,
    channel: str | None = None,
    status: str | None = None,
    sort_by: str = "created_at",
    sort_dir: str = "desc",
) -> None:
    """Raise ValueError for a filter or sort value the listing refuses (with a 422)."""
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if status is not None and status not in CONVERSATION_STATUSES:
        raise ValueError(f"status must be one of {CONVERSATION_STATUSES}, got {status!r}")
    if sort_by not in LISTING_SORT_KEYS:
        raise ValueError(f"sort_by must be one of {LISTING_SORT_KEYS}, got {sort_by!r}")
    if sort_dir not in ("asc", "desc"):
        raise ValueError(f"sort_dir must be 'asc' or 'desc', got {sort_dir!r}")


def listing(
    dataset: Dataset,
    *,
    phone: str | None = None,
    agent_uuid: str | None = None,
    channel: str | None = None,
    status: str | None = None,
    sort_by: str = "created_at",
    desc: bool = True,
) -> list[ConversationRecord]:
    """Every conversation that passes the filters, in the listing's order."""
    digits = None if phone is None else _NON_DIGITS.sub("", phone)
    agent = None if agent_uuid is None else agent_uuid.lower()
    with dataset.lock:
        records = [record(dataset.conversation(uuid)) for uuid in dataset.uuids]
    kept = [
        r
        for r in records
        if (digits is None or (bool(digits) and r.phone_digits == digits))
        and (agent is None or r.agent_uuid == agent)
        and (channel is None or r.channel == channel)
        and (status is None or r.status == status)
    ]
    key = "created_us" if sort_by == "created_at" else "updated_us"

    def instant(r: ConversationRecord) -> tuple[bool, int]:
        value = getattr(r, key)
        return value is None, value or 0

    # records are in creation order and sorts are stable (reverse=True too): ties keep it
    kept.sort(key=instant, reverse=desc)
    return kept


def one(dataset: Dataset, conversation: str) -> ConversationRecord | None:
    """One conversation's record, or None when there is no such conversation."""
    with dataset.lock:
        conv = dataset.conversations.get(conversation.lower())
        return None if conv is None else record(dataset.conversation(conv.uuid))
