"""A local stand-in for the Mihu sessions API: a real HTTP server on 127.0.0.1.

``Simulator`` serves ``GET /api/v1/conversations/{uuid}/sessions`` exactly as documented (envelope,
paging, filters, sorting, Laravel-style 401/404/422 bodies) from a synthetic dataset that is
generated deterministically from ``(seed, sizes)`` and looks like production data: timestamps in
mixed ISO 8601 formats and offsets, non-ASCII contact names, nulls, undocumented extra fields,
zero-length sessions, open sessions. Knobs add latency, 429s, 5xx pages, dropped connections,
stalls and drift (sessions added and updated while a client pages), and ``fail_next`` injects
deterministic faults, so the client can be tested without a token or a network.

Run it stand-alone with ``python -m mihu_frames.simulator`` (see ``main``), or in a subprocess with
``spawn`` so a benchmark's client does not share the server's GIL.

The server keeps a simulated clock that continues the data: ``Simulator.now()`` is ``DATA_END`` (the
end of the generated span) plus the time since ``start``. The ``Date`` header of every response
and the timestamps written by ``add_sessions``, ``touch_sessions`` and drift come from it, so open
sessions look minutes or hours old however long after ``DATA_END`` the demo runs. ``clock="wall"``
uses the real clock instead.

Only the standard library is used here. Generation is seeded (``random.Random``) and every
timestamp is relative to a fixed instant (``BASE_INSTANT``), so a ``Simulator(seed=s, sizes=z)``
built in another process has the same ground truth. Sessions are serialised to JSON once; a page
is a join of byte chunks over an ordering cached per (conversation, filters, sort) and dropped when
that conversation's data changes. Sleeps (latency, stalls) never hold the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import gc
import hmac
import json
import logging
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from random import Random
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "BASE_INSTANT",
    "CLOCKS",
    "DATA_END",
    "DEFAULT_SIZES",
    "FAULT_KINDS",
    "RequestRecord",
    "Simulator",
    "SpawnedSimulator",
    "main",
    "spawn",
]

logger = logging.getLogger("mihu_frames.simulator")

#: Sessions per conversation when ``sizes`` is not given: the paging edge cases plus one big one.
DEFAULT_SIZES: tuple[int, ...] = (0, 1, 99, 100, 101, 250, 3000)
#: Kinds accepted by ``Simulator.fail_next``.
FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "500", "502", "503", "drop", "stall", "invalid_json", "bad_envelope", "html200", "401"}
)
#: Generated data starts at this instant and spans ``_SPAN_DAYS`` days after it.
BASE_INSTANT: datetime = datetime(2026, 1, 5, tzinfo=timezone.utc)
_SPAN_DAYS = 300
#: End of the generated span: no generated timestamp is later, and the open (``active``) sessions
#: are exactly those still running at it. The simulated clock (``Simulator.now``) starts here.
DATA_END: datetime = BASE_INSTANT + timedelta(days=_SPAN_DAYS)
#: Values of ``Simulator(clock=...)``: the simulated clock (from ``DATA_END``) or the wall clock.
CLOCKS: tuple[str, ...] = ("simulated", "wall")

_STATUSES: tuple[str, ...] = ("active", "completed", "timed_out")
_TYPES: tuple[str, ...] = ("text", "voice")
_SORT_KEYS: tuple[str, ...] = ("created_at", "updated_at", "started_at", "last_activity_at")
_SORT_DIRS: tuple[str, ...] = ("asc", "desc")
_TIMESTAMPS: tuple[str, ...] = (
    "started_at",
    "ended_at",
    "last_activity_at",
    "evaluated_at",
    "summary_generated_at",
    "created_at",
    "updated_at",
)

_SEC = 1_000_000
_MIN = 60 * _SEC
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR
_EPOCH = datetime(1970, 1, 1)  # naive: local dates are built from it, offsets added by hand
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BASE_US = (BASE_INSTANT - _EPOCH_UTC) // timedelta(microseconds=1)
_END_US = (DATA_END - _EPOCH_UTC) // timedelta(microseconds=1)  # a whole second
_BASE_WEEKDAY = BASE_INSTANT.weekday()
_TIMEOUT_US = 15 * _MIN  # a timed-out session ends this long after its last activity
_COMPLETED_SHARE = 0.74 / 0.94  # of the ended sessions; the others timed out
#: Open sessions at ``DATA_END``: Poisson with mean size / _SESSIONS_PER_OPEN (about one per 10
#: sessions a day), at least one from _MIN_OPEN_SIZE sessions. See ``_open_at_end``.
_SESSIONS_PER_OPEN = 3000
_MIN_OPEN_SIZE = 200

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ROUTE = re.compile(r"/api/v1/conversations/([^/]*)/sessions/?")
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT_MAX = 2**63 - 1

# --- timestamp formats -------------------------------------------------------------------------
# A format is (precision in µs, fraction digits, offset in µs, suffix). Every instant is rounded to
# the precision of its own format, so the served string expresses it exactly.
_Format = tuple[int, int, int, str]
_OFFSETS: tuple[int, ...] = (180, -300, 330, 60, -480, 540, 0, 345, -180)  # minutes


def _offset_text(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


_SECONDS_Z: _Format = (_SEC, 0, 0, "Z")  # 2026-03-01T10:00:00Z
_MICROS_Z: _Format = (1, 6, 0, "Z")  # Laravel: 2026-03-01T10:00:00.000000Z
_MILLIS_Z: _Format = (1000, 3, 0, "Z")  # 2026-03-01T10:00:00.123Z
#: Weighted table drawn by index: about 35% seconds, 30% microseconds, 15% milliseconds (all "Z"),
#: 20% with a non-UTC offset (2026-03-01T13:00:00+03:00, some with microseconds).
_FORMAT_TABLE: tuple[_Format, ...] = (
    (_SECONDS_Z,) * 70
    + (_MICROS_Z,) * 60
    + (_MILLIS_Z,) * 30
    + tuple((_SEC, 0, m * _MIN, _offset_text(m)) for m in _OFFSETS for _ in range(3))
    + tuple((1, 6, m * _MIN, _offset_text(m)) for m in _OFFSETS)
)
_HOUR_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 8, 14, 18, 20, 20, 18, 19, 20, 19, 17, 14, 11, 9, 7, 5, 3, 2)
_HOUR_TABLE: tuple[int, ...] = tuple(h for h, w in enumerate(_HOUR_WEIGHTS) for _ in range(w))
_DATES: dict[int, str] = {}  # day number since the epoch -> "YYYY-MM-DDT"
_HHMM: tuple[str, ...] = tuple(f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440))
_SS: tuple[str, ...] = tuple(f"{s:02d}" for s in range(60))


def _iso(us: int, fmt: _Format) -> str:
    """Format an instant (epoch microseconds) as ISO 8601 in ``fmt`` (exact by construction)."""
    _, digits, offset, suffix = fmt
    seconds, fraction = divmod(us + offset, _SEC)
    minutes, second = divmod(seconds, 60)
    days, minute = divmod(minutes, 1440)
    date = _DATES.get(days)
    if date is None:
        date = _DATES[days] = (_EPOCH + timedelta(days=days)).strftime("%Y-%m-%dT")
    if digits == 0:
        return date + _HHMM[minute] + _SS[second] + suffix
    if digits == 6:
        return f"{date}{_HHMM[minute]}{_SS[second]}.{fraction:06d}{suffix}"
    return f"{date}{_HHMM[minute]}{_SS[second]}.{fraction // 1000:03d}{suffix}"


def _fit(raw: int, low: int, precision: int) -> int:
    """Round ``raw`` down to ``precision``, but never below ``low`` (then round ``low`` up)."""
    value = raw - raw % precision
    if value < low:
        value = -((-low) // precision) * precision
    return value


def _uuid4(rng: Random) -> str:
    value = rng.getrandbits(128)
    value = (value & 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF) | 0x4000_8000_000000000000
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LOG_240, _LOG_45, _LOG_30 = math.log(240.0), math.log(45.0), math.log(30.0)  # median seconds


def _lognormal_us(rng: Random, log_median_s: float, sigma: float, cap_s: float) -> int:
    return int(min(math.exp(rng.gauss(log_median_s, sigma)), cap_s) * _SEC)


def _token(value: str | None) -> str:
    """JSON token of a string that needs no escaping (UUIDs, timestamps), or ``null``."""
    return "null" if value is None else f'"{value}"'


# --- people and words --------------------------------------------------------------------------
_FIRST_NAMES = (
    "Zoë", "Çağrı", "Øyvind", "芳", "José", "Ñandú", "Ayşe", "Mehmet", "Björn", "Renée", "Łukasz",
    "Siobhán", "François", "Emma", "Liam", "Fatma", "Ahmet", "Søren", "Anaïs", "Dmitri", "Elif",
    "Noah", "Mia", "João", "Zeynep", "Chloé", "Jürgen", "Priya", "Hiroshi", "Olivia",
)  # fmt: skip
_SURNAMES = (
    "Yılmaz", "Øvergård", "García", "Núñez", "O'Brien", "Šimek", "Nguyễn", "王", "Kowalski",
    "Schröder", "Dubois", "Smith", "Demir", "Kaya", "Müller", "Fernández", "Lindqvist", "Sharma",
    "Tanaka", "Rossi", "Özdemir", "Johnson", "Petrović", "Brown",
)  # fmt: skip
_LISTINGS = (
    "2+1 flat in Kadıköy", "villa with the sea view", "office on Bağdat Caddesi",
    "studio near the campus", "loft in Zürich-West", "penthouse (listing #4821)",
    "furnished 1+1 in Çankaya", "garden apartment", "duplex at Øvre Slottsgate",
)  # fmt: skip
_SENTENCES = (
    "{name} asked about the {listing} and whether the price includes VAT.",
    'The customer wrote: "Is the {listing} still available?" and asked for more photos.',
    "{name} wants to schedule a viewing of the {listing} next week — mornings only.",
    "Budget mentioned: €{amount} (negotiable). The agent shared two alternatives.",
    "Contact prefers WhatsApp over calls; follow-up promised within 24 hours.",
    "The agent explained the contract terms; {name} said they would “think about it”.",
    'Caller was unhappy about the delay:\n"nobody called me back". Escalated to a manager.',
    "Asked if pets are allowed 🐶 and whether the {listing} has an elevator.",
    "Price quoted at ₺{amount}; {name} asked for a discount on a 12-month lease.",
    "No decision yet. Next step: send the floor plan and the energy certificate.",
    "{name} confirmed the appointment at 14:30 and will bring the ID documents.",
    "Session ended without a clear intent; the customer stopped replying…",
    "The customer's partner will join the next call.\nTopic: the {listing}.",
    "Requested the listing in German and Turkish (Türkçe); the agent sent both links.",
    "Path shared by the agent: C:\\Listings\\{amount}\\plan.pdf (the customer couldn't open it).",
)  # fmt: skip
_NAME = "\x00"  # placeholder for the contact's name inside a pooled sentence


def _sentence_pool() -> tuple[str, ...]:
    """Sentences with the listing and amount filled in; the name is filled per session."""
    rng = Random("mihu_frames.simulator.sentences")
    pool = []
    for template in _SENTENCES:
        for _ in range(24):
            amount = f"{rng.randrange(500, 950_000):,}"
            pool.append(template.format(name=_NAME, listing=rng.choice(_LISTINGS), amount=amount))
    return tuple(pool)


_SENTENCE_POOL = _sentence_pool()
_EMAIL_DOMAINS = ("example.com", "mail.example.org", "example.net", "posta.example.com.tr")
_EXTRA_KEYS = ("channel", "sentiment", "language", "is_test", "metadata")
_CHANNELS = ("whatsapp", "web", "sms", "phone", "instagram")
_LANGUAGES = ("tr", "en", "de", "es", "ar")


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", folded.lower())


def _make_contact(rng: Random) -> tuple[str, bytes]:
    """A contact as (first name, its JSON bytes): contacts recur, so they are encoded once."""
    name = rng.choice(_FIRST_NAMES)
    surname: str | None = rng.choice(_SURNAMES) if rng.random() > 0.04 else None
    r = rng.random()
    if r < 0.6:
        phone: str | None = f"+90{rng.randrange(5300000000, 5599999999)}"
    elif r < 0.75:
        phone = f"+1 ({rng.randrange(200, 999)}) 555-{rng.randrange(0, 9999):04d}"
    elif r < 0.9:
        phone = f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    else:
        phone = None
    email: str | None = None
    if rng.random() > 0.22:
        local = _ascii_slug(name) or "user"
        if surname:
            local += "." + (_ascii_slug(surname) or "x")
        email = f"{local}{rng.randrange(1, 999)}@{rng.choice(_EMAIL_DOMAINS)}"
    contact = {
        "uuid": _uuid4(rng),
        "name": name,
        "surname": surname,
        "phone_number": phone,
        "email": email,
    }
    return name, _ENCODER.encode(contact).encode("utf-8")


def _make_summary(rng: Random, name: str) -> str:
    """A summary of 100 to 400 characters built from pooled sentences."""
    r = rng.random
    pool = _SENTENCE_POOL
    target = 100 + int(r() * 301)
    text = ""
    while len(text) < target:
        sentence = pool[int(r() * len(pool))].replace(_NAME, name)
        separator = "" if not text else ("\n" if r() < 0.15 else " ")
        if len(text) >= 100 and len(text) + len(separator) + len(sentence) > 400:
            break
        text += separator + sentence
    return text


def _make_extras(rng: Random) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for key in rng.sample(_EXTRA_KEYS, rng.randint(1, 3)):
        if key == "channel":
            extras[key] = rng.choice(_CHANNELS)
        elif key == "sentiment":
            extras[key] = float(round(rng.uniform(-0.95, 0.95), 2)) or 0.01
        elif key == "language":
            extras[key] = rng.choice(_LANGUAGES)
        elif key == "is_test":
            extras[key] = rng.random() < 0.1
        else:
            extras[key] = {"source": rng.choice(("widget", "api", "import")), "version": 2}
    return {key: extras[key] for key in _EXTRA_KEYS if key in extras}  # one stable key order


# --- internal model ----------------------------------------------------------------------------
class _Session:
    """One session: internal status/type, exact instants, their JSON tokens and the JSON bytes."""

    __slots__ = (
        "agent",
        "body",
        "call",
        "campaign",
        "contact",
        "conversation",
        "extras",
        "listing",
        "seq",
        "status",
        "summary",
        "tasks",
        "times",
        "tokens",
        "type",
        "uuid",
    )

    seq: int
    uuid: str
    conversation: str
    status: str
    type: str
    agent: str
    contact: tuple[str, bytes] | None  # (first name, contact JSON)
    call: str | None
    campaign: str | None
    listing: str | None
    tasks: list[str]
    extras: dict[str, Any] | None
    summary: str | None
    times: dict[str, int | None]  # exact instants, epoch microseconds
    tokens: dict[str, str]  # JSON token of each timestamp as served ('"2026-…Z"' or 'null')
    body: bytes

    def update_time(self, name: str, us: int, fmt: _Format) -> None:
        self.times[name] = us
        self.tokens[name] = f'"{_iso(us, fmt)}"'

    def encode(self) -> None:
        """Serialise once to compact UTF-8 JSON, documented keys in documented order.

        The ASCII-only parts are built as text and the rest (summary, contact, extras) joined as
        bytes: much faster than ``json.dumps`` of a dict, and the same JSON.
        """
        t = self.tokens
        tasks = '"' + '","'.join(self.tasks) + '"' if self.tasks else ""
        head = (
            f'{{"uuid":"{self.uuid}","started_at":{t["started_at"]},"ended_at":{t["ended_at"]},'
            f'"last_activity_at":{t["last_activity_at"]},"evaluated_at":{t["evaluated_at"]},'
            '"summary":'
        )
        middle = (
            f',"summary_generated_at":{t["summary_generated_at"]},'
            f'"created_at":{t["created_at"]},"updated_at":{t["updated_at"]},'
            f'"conversation_uuid":"{self.conversation}","agent_uuid":{_token(self.agent)},'
            '"contact":'
        )
        tail = (
            f',"call_uuid":{_token(self.call)},"campaign_uuid":{_token(self.campaign)},'
            f'"listing_uuid":{_token(self.listing)},"task_uuids":[{tasks}]'
        )
        self.body = b"".join(
            (
                head.encode(),
                b"null" if self.summary is None else _ENCODER.encode(self.summary).encode(),
                middle.encode(),
                b"null" if self.contact is None else self.contact[1],
                tail.encode(),
                b"," + _ENCODER.encode(self.extras)[1:-1].encode() if self.extras else b"",
                b"}",
            )
        )


class _Conversation:
    """A conversation; its sessions are generated on first access, from its own seeded RNG."""

    __slots__ = (
        "_rng",
        "_sessions",
        "_size",
        "agents",
        "campaigns",
        "contacts",
        "index",
        "listings",
        "next_seq",
        "orders",
        "uuid",
    )

    def __init__(self, seed: int, index: int, size: int) -> None:
        self._rng = Random(f"mihu_frames.simulator:{seed}:{index}")
        self._size = size
        self._sessions: list[_Session] | None = None
        self.uuid = _uuid4(self._rng)
        self.index = index
        self.next_seq = 0
        # cached orderings: (status, type, sort_by, sort_dir) -> session bodies in served order
        self.orders: dict[tuple[str | None, str | None, str, str], list[bytes]] = {}
        self.agents: list[str] = []
        self.campaigns: list[str] = []
        self.listings: list[str] = []
        self.contacts: list[tuple[str, bytes]] = []

    @property
    def generated(self) -> bool:
        return self._sessions is not None

    @property
    def sessions(self) -> list[_Session]:
        """Sessions in insertion (``seq``) order, which is also ``created_at`` ascending."""
        if self._sessions is None:
            self._sessions = self._generate()
        return self._sessions

    @sessions.setter
    def sessions(self, value: list[_Session]) -> None:
        self._sessions = value

    def take_seq(self) -> int:
        self.next_seq += 1
        return self.next_seq

    def _generate(self) -> list[_Session]:
        started = time.perf_counter()
        rng = self._rng
        self.agents = [_uuid4(rng) for _ in range(rng.randint(2, 6))]
        self.campaigns = [_uuid4(rng) for _ in range(rng.randint(1, 4))]
        self.listings = [_uuid4(rng) for _ in range(rng.randint(5, 30))]
        self.contacts = [_make_contact(rng) for _ in range(max(3, self._size // 8))]
        gc_was_enabled = gc.isenabled()
        gc.disable()  # many small acyclic objects: collections would only cost time
        try:
            sessions = [_generate_session(rng, self) for _ in range(self._size)]
            _open_at_end(rng, sessions)
            sessions.sort(key=lambda s: (s.times["created_at"], s.times["started_at"]))
            for s in sessions:
                s.seq = self.take_seq()
                s.encode()
        finally:
            if gc_was_enabled:
                gc.enable()
        logger.debug(
            "generated %d sessions of conversation %s in %.3f s",
            len(sessions),
            self.uuid,
            time.perf_counter() - started,
        )
        return sessions


def _new_session(rng: Random, conv: _Conversation, status: str, kind: str) -> _Session:
    """A session with every non-timestamp field drawn (no summary yet)."""
    r = rng.random
    s = _Session()
    s.seq = 0
    s.status = status
    s.type = kind
    s.uuid = _uuid4(rng)
    s.conversation = conv.uuid
    s.agent = conv.agents[int(r() * len(conv.agents))]
    s.contact = conv.contacts[int(r() * len(conv.contacts))] if r() > 0.1 else None
    s.call = _uuid4(rng) if kind == "voice" and r() < 0.95 else None
    s.campaign = conv.campaigns[int(r() * len(conv.campaigns))] if r() < 0.7 else None
    s.listing = conv.listings[int(r() * len(conv.listings))] if r() < 0.6 else None
    u = r()
    count = 0 if u < 0.4 else 1 if u < 0.75 else 2 + int(r() * 4)
    s.tasks = [_uuid4(rng) for _ in range(count)]
    s.extras = _make_extras(rng) if r() < 0.1 else None
    s.summary = None
    return s


def _generate_session(rng: Random, conv: _Conversation) -> _Session:
    """One historical session with consistent, production-like timestamps.

    It starts anywhere in the span and gets a duration; if it would end after ``DATA_END`` it is
    still running then, so it is served open (status ``active``).
    """
    r = rng.random
    status = "completed" if r() < _COMPLETED_SHARE else "timed_out"
    s = _new_session(rng, conv, status, "text" if r() < 0.65 else "voice")
    zero = status == "completed" and r() < 0.02
    day = int(r() * _SPAN_DAYS)
    if (day + _BASE_WEEKDAY) % 7 >= 5 and r() < 0.5:
        day = int(r() * _SPAN_DAYS)  # quieter weekends
    hour = _HOUR_TABLE[int(r() * len(_HOUR_TABLE))]
    started = _BASE_US + day * _DAY + hour * _HOUR + int(r() * _HOUR)
    duration = 0 if zero else _lognormal_us(rng, _LOG_240, 1.3, 5 * 3600.0)
    _set_times(rng, s, started, duration, zero=zero)
    return s


def _poisson(rng: Random, mean: float) -> int:
    if mean > 30:  # normal approximation (and no underflow of exp(-mean))
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _open_at_end(rng: Random, sessions: list[_Session]) -> None:
    """Give a conversation a realistic handful of sessions running at ``DATA_END``.

    Sessions last minutes and the span ends at midnight UTC, so few start late enough to be still
    running. The number wanted is drawn from a Poisson with a mean proportional to the arrival
    rate (at least one from ``_MIN_OPEN_SIZE`` sessions); when fewer are open, the latest-starting
    ended sessions are moved to start shortly before ``DATA_END`` and run across it: a duration
    drawn length-biased (as a session seen running at a given instant is), the instant uniform
    within it. Their other fields and their would-be ended status are kept.
    """
    size = len(sessions)
    if size == 0:
        return
    want = _poisson(rng, size / _SESSIONS_PER_OPEN)
    if size >= _MIN_OPEN_SIZE:
        want = max(want, 1)
    missing = want - sum(s.status == "active" for s in sessions)
    if missing <= 0:
        return
    candidates = [
        s
        for s in sessions
        if s.status != "active" and s.times["ended_at"] != s.times["started_at"]  # not zero-length
    ]
    candidates.sort(key=lambda s: s.times["started_at"] or 0, reverse=True)
    for s in candidates[:missing]:
        # length-biased lognormal(mu, sigma) is lognormal(mu + sigma^2, sigma)
        duration = max(_SEC, _lognormal_us(rng, _LOG_240 + 1.3**2, 1.3, 5 * 3600.0))
        started = _END_US - max(1, int(rng.random() * duration))
        _set_times(rng, s, started, duration, zero=False, force_open=True)


def _set_times(
    rng: Random,
    s: _Session,
    started: int,
    duration: int,
    *,
    zero: bool,
    force_open: bool = False,
) -> None:
    """Set the timestamps (and summary) of ``s``, which starts at ``started`` (< ``_END_US``).

    ``s.status`` is the way it ends (completed or timed_out); it becomes ``active`` when that end
    is after ``DATA_END`` (or ``force_open``). Evaluations and summaries not done by ``DATA_END``
    are left null.
    """
    r = rng.random
    table = _FORMAT_TABLE
    n_formats = len(table)
    if zero:
        started -= started % _SEC  # every format can express it, so all three stay equal

    f_start = table[int(r() * n_formats)]
    f_created = table[int(r() * n_formats)]
    f_last = table[int(r() * n_formats)]
    f_end = table[int(r() * n_formats)]
    f_eval = table[int(r() * n_formats)]
    f_summary = table[int(r() * n_formats)]
    f_updated = table[int(r() * n_formats)]
    start = _fit(started, 0, f_start[0])
    lag = 0 if r() < 0.5 else int(r() * 2 * _SEC)
    created = _fit(start - lag, 0, f_created[0])
    completed = s.status == "completed"
    idle = min(duration, int(r() * 90 * _SEC)) if completed and not zero else 0
    last_raw = start + duration - idle  # the last activity
    closes = start + duration + (0 if completed else _TIMEOUT_US)  # when it ends
    end = evaluated = generated = None
    s.summary = None
    if force_open or closes > _END_US:  # still running at the end of the span
        s.status = "active"
        if last_raw > _END_US:  # activity goes on: the latest was in the last 90 s
            last_raw = _END_US - int(r() * min(_END_US - start, 90 * _SEC))
        last = _fit(last_raw, start, f_last[0])
        latest = last
    else:
        last = _fit(last_raw, start, f_last[0])
        if completed:
            end = _fit(start + duration, last, f_end[0])
        else:
            end = _fit(last + _TIMEOUT_US, last, f_end[0])
        latest = end
        evaluate = r() < (0.88 if completed else 0.35)
        if evaluate:
            delay = _lognormal_us(rng, _LOG_45, 1.0, 2 * 3600.0)
            when = _fit(end + delay, end, f_eval[0])
            if when <= _END_US:  # else still pending at the end of the span
                evaluated = when
                latest = max(latest, evaluated)
        if r() < (0.92 if evaluate else 0.15):
            delay = _lognormal_us(rng, _LOG_30, 1.0, 2 * 3600.0)
            when = _fit(end + delay, end, f_summary[0])
            if when <= _END_US:
                generated = when
                latest = max(latest, generated)
                s.summary = _make_summary(rng, s.contact[0] if s.contact else "The customer")
    bump = 0 if r() < 0.3 else int(r() * 5 * _SEC)
    # never past the end of the span (open sessions reach it); _END_US fits every precision
    updated = _fit(min(latest + bump, _END_US), latest, f_updated[0])
    s.times = {
        "started_at": start,
        "ended_at": end,
        "last_activity_at": last,
        "evaluated_at": evaluated,
        "summary_generated_at": generated,
        "created_at": created,
        "updated_at": updated,
    }
    s.tokens = {
        "started_at": f'"{_iso(start, f_start)}"',
        "ended_at": "null" if end is None else f'"{_iso(end, f_end)}"',
        "last_activity_at": f'"{_iso(last, f_last)}"',
        "evaluated_at": "null" if evaluated is None else f'"{_iso(evaluated, f_eval)}"',
        "summary_generated_at": "null" if generated is None else f'"{_iso(generated, f_summary)}"',
        "created_at": f'"{_iso(created, f_created)}"',
        "updated_at": f'"{_iso(updated, f_updated)}"',
    }


# --- HTTP plumbing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator received.

    Attributes
    ----------
    conversation : str or None
        The conversation segment of a sessions path, lower-cased (even if unknown or malformed);
        None for any other path.
    params : dict of str to str
        The query parameters (the last value wins for a repeated name).
    status : int
        The HTTP status sent; 0 when the connection was dropped without a response.
    page : int or None
        The page asked for (1 when absent); None when not a valid integer or not a sessions path.
    """

    conversation: str | None
    params: dict[str, str]
    status: int
    page: int | None


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _FaultRule:
    kind: str
    remaining: int
    conversation: str | None
    page: int | None


def _json_response(status: int, payload: dict[str, Any]) -> _Response:
    return _Response(status, _ENCODER.encode(payload).encode("utf-8"))


def _error(status: int, message: str) -> _Response:
    return _json_response(status, {"success": False, "message": message})


def _nginx_page(status: int, title: str | None = None) -> bytes:
    title = title or f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


_HTML200 = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>We\'ll be right back'
    b"</title></head>\n<body><h1>Scheduled maintenance</h1><p>Mihu is being upgraded. Please try "
    b"again in a few minutes.</p></body></html>\n"
)


def _parse_int(value: str) -> int | None:
    value = value.strip()
    if not _INT_RE.fullmatch(value):
        return None
    number = int(value)
    return number if abs(number) <= _INT_MAX else None


def _validate(params: dict[str, str]) -> dict[str, list[str]]:
    """Laravel-style validation of the query string; returns field errors (empty when valid)."""
    errors: dict[str, list[str]] = {}
    for name, label, maximum in (("page", "page", None), ("per_page", "per page", 100)):
        raw = params.get(name, "")
        if raw == "":  # ConvertEmptyStringsToNull + nullable
            continue
        number = _parse_int(raw)
        if number is None:
            errors[name] = [f"The {label} field must be an integer."]
        elif number < 1:
            errors[name] = [f"The {label} field must be at least 1."]
        elif maximum is not None and number > maximum:
            errors[name] = [f"The {label} field must not be greater than {maximum}."]
    for name, label, allowed in (
        ("status", "status", _STATUSES),
        ("type", "type", _TYPES),
        ("sort_by", "sort by", _SORT_KEYS),
        ("sort_dir", "sort dir", _SORT_DIRS),
    ):
        raw = params.get(name, "")
        if raw != "" and raw not in allowed:
            errors[name] = [f"The selected {label} is invalid."]
    return errors


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    simulator: Simulator

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, *, head: bool) -> None:
        self._discard_body()
        try:
            self.server.simulator._handle(self, head=head)
        except Exception:  # a simulator bug must show as a 500, not a hung client
            logger.exception("simulator failed on %s %s", self.command, self.path)
            self.close_connection = True
            self.send(_error(500, "Server Error"), head=head)

    def _discard_body(self) -> None:
        """Read a request body nobody asked for, so the next keep-alive request parses."""
        length = _parse_int(self.headers.get("Content-Length") or "0") or 0
        if length > 0:
            self.rfile.read(length)

    def _not_allowed(self) -> None:
        self._discard_body()
        path = urlsplit(self.path).path.lstrip("/")
        message = (
            f"The {self.command} method is not supported for route {path}. "
            "Supported methods: GET, HEAD."
        )
        self.send(_error(405, message))

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def send(self, response: _Response, *, head: bool = False) -> None:
        """Write status line, headers and body in a single send (no Nagle/delayed-ACK stalls)."""
        lines = [
            f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
            "Server: nginx",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-cache, private",
            *(f"{name}: {value}" for name, value in response.headers),
            "Connection: close" if self.close_connection else "Connection: keep-alive",
        ]
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head_bytes if head else head_bytes + response.body)
        except OSError:  # the client went away (e.g. it timed out during a stall)
            self.close_connection = True

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, from the simulator's clock (also for ``send_error`` responses)."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return self.server.simulator._http_date()

    def drop(self) -> None:
        """Close the connection without sending anything."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --- the simulator -----------------------------------------------------------------------------
class Simulator:
    """An HTTP server on 127.0.0.1 serving the Mihu sessions endpoint from synthetic data.

    The constructor fixes the conversation UUIDs; each conversation's sessions are generated on
    first use (a request, ``ground_truth``, ``tags`` or a mutation), always the same way, so
    construction is instant even for large ``sizes``. ``start`` serves the data in a daemon
    thread. Fault and latency knobs are plain attributes that may be changed while it runs.

    Parameters
    ----------
    seed : int
        Seed of the generated data; with ``sizes`` it fully determines the ground truth.
    sizes : sequence of int or str, optional
        Sessions per conversation, one conversation each, in order. Default ``DEFAULT_SIZES``.
        A string is read like the ``--sizes`` option: ``"0,1,99"`` or ``"1000x20"``.
    token : str
        The bearer token the server accepts.
    latency : float
        Seconds to sleep before answering every request (never while holding the lock).
    rate_limit : float
        Probability that a request gets a 429 with ``Retry-After: retry_after``.
    retry_after : int
        Seconds sent in the ``Retry-After`` header of 429 responses.
    server_error : float
        Probability of a 500/502/503 with an nginx-style HTML body.
    drop : float
        Probability that the connection is closed without any response.
    stall : float
        Probability that the answer is delayed by ``stall_seconds``.
    stall_seconds : float
        Length of a stall.
    drift : int
        When k > 0, every request for a conversation first adds k sessions to it and touches k.
    host, port : str, int
        Where to listen; port 0 picks a free port.
    clock : {"simulated", "wall"}
        ``"simulated"`` (default): ``now()`` is ``DATA_END`` plus the time since ``start``, so the
        ``Date`` header and new timestamps continue the generated data. ``"wall"``: the real
        clock (weeks after the data, so open sessions look weeks old).

    Examples
    --------
    >>> with Simulator(seed=1, sizes=[120]) as sim:  # doctest: +SKIP
    ...     url = f"{sim.base_url}/api/v1/conversations/{sim.conversation_uuids[0]}/sessions"
    ...     reply = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"})
    ...     reply.json()["data"]["total"]
    120
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        sizes: Sequence[int] | str | None = None,
        token: str = "sim-token",
        latency: float = 0.0,
        rate_limit: float = 0.0,
        retry_after: int = 1,
        server_error: float = 0.0,
        drop: float = 0.0,
        stall: float = 0.0,
        stall_seconds: float = 5.0,
        drift: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: str = "simulated",
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        if isinstance(sizes, str):
            sizes = _parse_sizes(sizes)
        sizes = DEFAULT_SIZES if sizes is None else tuple(int(n) for n in sizes)
        if any(n < 0 for n in sizes):
            raise ValueError(f"sizes must be >= 0, got {list(sizes)}")
        self.seed = seed
        self.sizes: tuple[int, ...] = tuple(sizes)
        self.token = token
        self.latency = latency
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.server_error = server_error
        self.drop = drop
        self.stall = stall
        self.stall_seconds = stall_seconds
        self.drift = drift
        self.host = host
        self.port = port
        self.clock = clock
        self.requests: list[RequestRecord] = []

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._fault_rng = Random(f"mihu_frames.simulator.faults:{seed}")
        self._mutation_rng = Random(f"mihu_frames.simulator.mutations:{seed}")
        self._rules: list[_FaultRule] = []
        self._bad_envelope_variant = 0
        self._started_ns: int | None = None  # time.monotonic_ns() at the first start()
        self._clock = _END_US  # the latest instant handed out (no generated one is later)
        self._conversations: dict[str, _Conversation] = {}
        self.conversation_uuids: list[str] = []
        for size in self.sizes:
            self._add_conversation(size)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Start serving in a daemon thread and return ``self``.

        Returns
        -------
        Simulator
            ``self``, so ``sim = Simulator(...).start()`` works.
        """
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        if self._started_ns is None:  # a restart does not turn the clock back
            self._started_ns = time.monotonic_ns()
        server = _Server((self.host, self.port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mihu-simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.info("simulator serving %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake sleeping handlers. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        logger.info("simulator stopped")

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"Simulator(seed={self.seed}, sizes={list(self.sizes)}, {where})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server.

        Raises
        ------
        RuntimeError
            If the simulator has not been started.
        """
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def now(self) -> datetime:
        """The simulator's current time (UTC): what the ``Date`` header and mutations use.

        With ``clock="simulated"`` it is ``DATA_END`` plus the time elapsed since the first
        ``start`` (``DATA_END`` before that), measured with ``time.monotonic``; with
        ``clock="wall"`` it is the real time.

        Returns
        -------
        datetime
            A timezone-aware UTC datetime with microsecond resolution.

        Examples
        --------
        >>> Simulator(sizes=[1]).now() == DATA_END
        True
        """
        return _EPOCH_UTC + timedelta(microseconds=self._now_us())

    # --- requests log and deterministic faults ----------------------------------------------
    @property
    def request_count(self) -> int:
        """Number of requests received since the start or the last ``reset_requests``."""
        return len(self.requests)

    def reset_requests(self) -> None:
        """Forget the recorded requests (the list is cleared in place)."""
        with self._lock:
            self.requests.clear()

    def fail_next(
        self, kind: str, n: int = 1, *, conversation: str | None = None, page: int | None = None
    ) -> None:
        """Make the next ``n`` matching requests fail with ``kind``.

        Parameters
        ----------
        kind : str
            ``"429"``, ``"500"``, ``"502"``, ``"503"``, ``"401"``; ``"drop"`` (close without a
            response); ``"stall"`` (answer after ``stall_seconds``); ``"invalid_json"`` (200 with a
            truncated JSON body); ``"bad_envelope"`` (200 JSON that is not the envelope);
            ``"html200"`` (200 ``text/html`` maintenance page).
        n : int
            How many requests fail.
        conversation, page : optional
            Only requests for this conversation and/or page match (page 1 when not given).

        Examples
        --------
        >>> sim.fail_next("503", 2, page=3)  # doctest: +SKIP
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rule = _FaultRule(kind, n, conversation.lower() if conversation else None, page)
        with self._lock:
            self._rules.append(rule)

    # --- data access ------------------------------------------------------------------------
    def ground_truth(
        self,
        conversation: str | None = None,
        *,
        status: str | None = None,
        type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the sessions exactly as currently served, in ``created_at`` ascending order.

        Parameters
        ----------
        conversation : str, optional
            One conversation UUID; None means every conversation.
        status, type : str, optional
            Keep only sessions with this internal status / type (as the API filters do).

        Returns
        -------
        list of dict
            ``json.loads`` of each session's served bytes, undocumented fields included.

        Examples
        --------
        >>> Simulator(seed=1, sizes=[3]).ground_truth()[0]["uuid"]  # doctest: +SKIP
        '...'
        """
        if status is not None and status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")
        if type is not None and type not in _TYPES:
            raise ValueError(f"type must be one of {_TYPES}, got {type!r}")
        with self._lock:
            if conversation is None:
                keyed = [
                    ((s.times["created_at"] or 0, c.index, s.seq), s)
                    for c in self._conversations.values()
                    for s in c.sessions
                ]
                keyed.sort(key=lambda pair: pair[0])
                sessions = [s for _, s in keyed]
            else:
                sessions = list(self._conversation(conversation).sessions)
            bodies = [
                s.body
                for s in sessions
                if (status is None or s.status == status) and (type is None or s.type == type)
            ]
        return [json.loads(body) for body in bodies]

    def tags(self) -> dict[str, tuple[str, str]]:
        """Return ``{session uuid: (status, type)}`` for every session (not in the served JSON)."""
        with self._lock:
            return {
                s.uuid: (s.status, s.type) for c in self._conversations.values() for s in c.sessions
            }

    # --- mutations --------------------------------------------------------------------------
    def add_conversation(self, size: int) -> str:
        """Generate a new conversation with ``size`` sessions and return its UUID.

        The content depends only on (seed, position, size), like the initial conversations.
        """
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        with self._lock:
            return self._add_conversation(size)

    def add_sessions(self, conversation: str, n: int) -> list[str]:
        """Add ``n`` new open sessions created, started and updated now (strictly increasing).

        "Now" is ``now()``, pushed forward by a microsecond where needed so that every new
        timestamp is later than all timestamps before it.

        Returns
        -------
        list of str
            The new session UUIDs, oldest first.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self._mutation_rng
        with self._lock:
            conv = self._conversation(conversation)
            added: list[str] = []
            for _ in range(n):
                s = _new_session(rng, conv, "active", "text" if rng.random() < 0.65 else "voice")
                now = self._tick()
                fmt = self._now_format()
                opened = ("started_at", "last_activity_at", "created_at", "updated_at")
                s.times = {name: now if name in opened else None for name in _TIMESTAMPS}
                token = f'"{_iso(now, fmt)}"'
                s.tokens = {name: token if name in opened else "null" for name in _TIMESTAMPS}
                s.seq = conv.take_seq()
                s.encode()
                conv.sessions.append(s)
                added.append(s.uuid)
            conv.orders.clear()
        return added

    def touch_sessions(self, conversation: str, n: int) -> list[str]:
        """Record new activity on ``n`` existing sessions; return their UUIDs.

        Open sessions are chosen first: they get ``last_activity_at = updated_at = now`` and one in
        four ends now (status ``completed``, ``ended_at`` set). When fewer than ``n`` are open,
        closed sessions are touched too, but only their ``updated_at`` moves, so that
        ``last_activity_at <= ended_at`` keeps holding.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self._mutation_rng
        with self._lock:
            conv = self._conversation(conversation)
            open_sessions = [s for s in conv.sessions if s.status == "active"]
            chosen = rng.sample(open_sessions, min(n, len(open_sessions)))
            if len(chosen) < n:
                closed = [s for s in conv.sessions if s.status != "active"]
                chosen += rng.sample(closed, min(n - len(chosen), len(closed)))
            for s in chosen:
                now = self._tick()
                fmt = self._now_format()
                if s.status == "active":
                    s.update_time("last_activity_at", now, fmt)
                    if rng.random() < 0.25:
                        s.status = "completed"
                        s.update_time("ended_at", now, fmt)
                s.update_time("updated_at", now, fmt)
                s.encode()
            if chosen:
                conv.orders.clear()
        return [s.uuid for s in chosen]

    def delete_sessions(self, conversation: str, n: int) -> list[str]:
        """Delete ``n`` randomly chosen sessions (all if fewer) and return their UUIDs."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self._lock:
            conv = self._conversation(conversation)
            doomed = self._mutation_rng.sample(conv.sessions, min(n, len(conv.sessions)))
            gone = {id(s) for s in doomed}
            conv.sessions = [s for s in conv.sessions if id(s) not in gone]
            if doomed:
                conv.orders.clear()
        return [s.uuid for s in doomed]

    # --- internals --------------------------------------------------------------------------
    def _conversation(self, conversation: str) -> _Conversation:
        """The conversation, generated (call with the lock held)."""
        try:
            conv = self._conversations[conversation.lower()]
        except KeyError:
            raise KeyError(f"unknown conversation {conversation!r}") from None
        _ = conv.sessions
        return conv

    def _add_conversation(self, size: int) -> str:
        conv = _Conversation(self.seed, len(self.conversation_uuids), size)
        self._conversations[conv.uuid] = conv
        self.conversation_uuids.append(conv.uuid)
        return conv.uuid

    def _generate_all(self) -> None:
        """Generate every conversation now rather than on first use."""
        with self._lock:
            for conv in self._conversations.values():
                _ = conv.sessions

    def _now_us(self) -> int:
        """``now()`` in epoch microseconds."""
        if self.clock == "wall":
            return time.time_ns() // 1000
        started = self._started_ns
        if started is None:
            return _END_US
        return _END_US + (time.monotonic_ns() - started) // 1000

    def _tick(self) -> int:
        """Now in epoch microseconds, strictly after every instant handed out before."""
        self._clock = max(self._now_us(), self._clock + 1)
        return self._clock

    def _http_date(self) -> str:
        """``Date`` header value: now, rounded up to the second and never before an instant
        handed out, so every timestamp a response can contain is at or before its ``Date``."""
        us = max(self._now_us(), self._clock)
        seconds = -(-us // _SEC)
        return email.utils.format_datetime(_EPOCH_UTC + timedelta(seconds=seconds), usegmt=True)

    def _now_format(self) -> _Format:
        rng = self._mutation_rng
        if rng.random() < 0.85:
            return _MICROS_Z
        minutes = rng.choice(_OFFSETS)
        return (1, 6, minutes * _MIN, _offset_text(minutes))

    def _order(
        self, conv: _Conversation, status: str | None, type_: str | None, sort_by: str, desc: bool
    ) -> list[bytes]:
        key = (status, type_, sort_by, "desc" if desc else "asc")
        order = conv.orders.get(key)
        if order is None:
            rows = [
                s
                for s in conv.sessions
                if (status is None or s.status == status) and (type_ is None or s.type == type_)
            ]
            # rows are in seq order and sorts are stable (reverse=True too), so ties keep
            # insertion order both ways; nulls sort last ascending and first descending.
            rows.sort(key=lambda s: (s.times[sort_by] is None, s.times[sort_by] or 0), reverse=desc)
            order = [s.body for s in rows]
            conv.orders[key] = order
        return order

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _take_fault(self, conversation: str | None, page: int | None) -> str | None:
        with self._lock:
            for rule in self._rules:
                if (rule.conversation is None or rule.conversation == conversation) and (
                    rule.page is None or rule.page == page
                ):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return rule.kind
            rng = self._fault_rng
            if self.rate_limit > 0 and rng.random() < self.rate_limit:
                return "429"
            if self.server_error > 0 and rng.random() < self.server_error:
                return rng.choice(("500", "502", "503"))
            if self.drop > 0 and rng.random() < self.drop:
                return "drop"
            if self.stall > 0 and rng.random() < self.stall:
                return "stall"
        return None

    def _record(
        self, conversation: str | None, params: dict[str, str], status: int, page: int | None
    ) -> None:
        with self._lock:
            self.requests.append(RequestRecord(conversation, params, status, page))

    def _handle(self, handler: _Handler, *, head: bool = False) -> None:
        split = urlsplit(handler.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        match = _ROUTE.fullmatch(split.path)
        conversation = match.group(1).lower() if match else None
        page: int | None = None
        if match:
            page = 1 if params.get("page", "") == "" else _parse_int(params["page"])

        self._sleep(self.latency)
        fault = self._take_fault(conversation, page)
        logger.debug("%s %s -> fault %s", handler.command, handler.path, fault)
        if fault == "drop":
            self._record(conversation, params, 0, page)
            handler.drop()
            return
        if fault == "stall":
            self._sleep(self.stall_seconds)
            fault = None

        if fault is None or fault in ("invalid_json", "bad_envelope", "html200"):
            response, items = self._serve(handler, match, conversation, params)
            if fault is not None:
                response = self._corrupt(fault, response, items)
        elif fault == "401":
            response = _error(401, "Unauthenticated.")
        elif fault == "429":
            response = _error(429, "Too Many Attempts.")
            response.headers = (
                ("Retry-After", str(int(self.retry_after))),
                ("X-RateLimit-Limit", "60"),
                ("X-RateLimit-Remaining", "0"),
            )
        else:
            response = _Response(int(fault), _nginx_page(int(fault)), "text/html")
        self._record(conversation, params, response.status, page)
        handler.send(response, head=head)

    def _serve(
        self,
        handler: _Handler,
        match: re.Match[str] | None,
        conversation: str | None,
        params: dict[str, str],
    ) -> tuple[_Response, list[bytes] | None]:
        if match is None or conversation is None:
            return _error(404, "Not found."), None
        auth = handler.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), self.token.encode("utf-8")
        ):
            return _error(401, "Unauthenticated."), None
        if not _UUID_RE.fullmatch(conversation) or conversation not in self._conversations:
            return _error(404, "Conversation not found."), None
        errors = _validate(params)
        if errors:
            messages = [m for field_errors in errors.values() for m in field_errors]
            message = messages[0]
            if len(messages) > 1:
                more = len(messages) - 1
                message += f" (and {more} more error{'s' if more > 1 else ''})"
            payload = {"success": False, "message": message, "errors": errors}
            return _json_response(422, payload), None

        page = _parse_int(params.get("page") or "1") or 1
        per_page = _parse_int(params.get("per_page") or "15") or 15
        status = params.get("status") or None
        type_ = params.get("type") or None
        sort_by = params.get("sort_by") or "started_at"
        desc = (params.get("sort_dir") or "desc") == "desc"
        with self._lock:
            conv = self._conversations.get(conversation)
            if conv is None:  # deleted meanwhile
                return _error(404, "Conversation not found."), None
            if self.drift > 0:
                self.add_sessions(conv.uuid, self.drift)
                self.touch_sessions(conv.uuid, self.drift)
            order = self._order(conv, status, type_, sort_by, desc)
            total = len(order)
            start = (page - 1) * per_page
            items = order[start : start + per_page] if start < total else []

        last_page = max(1, math.ceil(total / per_page))
        host = handler.headers.get("Host") or self.base_url.split("//", 1)[1]
        path = f"http://{host}/api/v1/conversations/{conversation}/sessions"

        def url(number: int | None) -> str:
            return "null" if number is None else _laravel_json(f"{path}?page={number}")

        first = start + 1 if items else None
        tail = (
            f'],"from":{"null" if first is None else first},'
            f'"to":{"null" if first is None else first + len(items) - 1},'
            f'"path":{_laravel_json(path)},'
            f'"next_page_url":{url(page + 1 if page < last_page else None)},'
            f'"prev_page_url":{url(page - 1 if page > 1 else None)},'
            f'"first_page_url":{url(1)},"last_page_url":{url(last_page)}}}}}'
        )
        head = (
            '{"success":true,"message":"Sessions retrieved successfully","data":'
            f'{{"current_page":{page},"total":{total},"last_page":{last_page},'
            f'"per_page":{per_page},"data":['
        )
        body = head.encode() + b",".join(items) + tail.encode()
        return _Response(200, body), items

    def _corrupt(self, fault: str, response: _Response, items: list[bytes] | None) -> _Response:
        if fault == "invalid_json":
            body = response.body
            return _Response(200, body[: max(1, len(body) // 2)])
        if fault == "html200":
            return _Response(200, _HTML200, "text/html; charset=UTF-8")
        data = b"[" + b",".join(items or []) + b"]"
        with self._lock:
            variant = self._bad_envelope_variant % 3
            self._bad_envelope_variant += 1
        if variant == 0:
            body = b'{"data":' + data + b"}"
        elif variant == 1:
            body = b'{"success":true,"message":"Sessions retrieved successfully"}'
        else:
            body = b'{"success":true,"message":"Sessions retrieved successfully","data":' + data
            body += b"}"
        return _Response(200, body)


def _laravel_json(text: str) -> str:
    """JSON string the way Laravel's json_encode writes it (slashes escaped)."""
    return _ENCODER.encode(text).replace("/", "\\/")


# --- command line and subprocess ---------------------------------------------------------------
def _parse_sizes(text: str) -> tuple[int, ...]:
    """Read ``"0,1,99,100"`` or ``"1000x20"`` (20 conversations of 1000), or a mix of both."""
    sizes: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        count, _, times = part.partition("x")
        try:
            n, repeat = int(count), int(times or "1")
        except ValueError:
            raise ValueError(f"bad sizes item {part!r}") from None
        if n < 0 or repeat < 0:
            raise ValueError(f"bad sizes item {part!r}")
        sizes.extend([n] * repeat)
    return tuple(sizes)


def _sizes_argument(text: str) -> tuple[int, ...]:
    try:
        return _parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mihu_frames.simulator",
        description="Serve the Mihu sessions API from seeded synthetic data on 127.0.0.1.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sizes",
        type=_sizes_argument,
        default=None,
        help='sessions per conversation: "0,1,99,100" or "1000x20" (20 of 1000); may be mixed',
    )
    parser.add_argument("--token", default="sim-token")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=0.0)
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--server-error", type=float, default=0.0)
    parser.add_argument("--drop", type=float, default=0.0)
    parser.add_argument("--stall", type=float, default=0.0)
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    parser.add_argument("--drift", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=CLOCKS,
        default="simulated",
        help="simulated: Date and new timestamps continue from the data's end; wall: real time",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level for stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM.

    Prints one JSON line ``{"base_url", "token", "conversations"}`` to stdout once serving.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status, 0 on a clean shutdown.

    Examples
    --------
    ``python -m mihu_frames.simulator --port 0 --sizes 1000x20 --latency 0.02``
    """
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    sim = Simulator(
        seed=args.seed,
        sizes=args.sizes,
        token=args.token,
        latency=args.latency,
        rate_limit=args.rate_limit,
        retry_after=args.retry_after,
        server_error=args.server_error,
        drop=args.drop,
        stall=args.stall,
        stall_seconds=args.stall_seconds,
        drift=args.drift,
        host=args.host,
        port=args.port,
        clock=args.clock,
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        done.set()

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: rely on KeyboardInterrupt
            previous[sig] = signal.signal(sig, _on_signal)
    sim._generate_all()  # warm before announcing, so clients never wait on generation
    sim.start()
    try:
        line = {
            "base_url": sim.base_url,
            "token": sim.token,
            "conversations": sim.conversation_uuids,
        }
        print(json.dumps(line), flush=True)
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


@dataclass(frozen=True)
class SpawnedSimulator:
    """A simulator running in a subprocess (see ``spawn``).

    Attributes
    ----------
    base_url, token : str
        Where it serves and the token it accepts.
    conversation_uuids : list of str
        Its conversations, in order of ``sizes``.
    pid : int
        The subprocess id.
    process : subprocess.Popen
        The subprocess itself.
    """

    base_url: str
    token: str
    conversation_uuids: list[str]
    pid: int
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)


_SPAWN_OPTIONS = frozenset(
    {
        "seed", "sizes", "token", "latency", "rate_limit", "retry_after", "server_error", "drop",
        "stall", "stall_seconds", "drift", "host", "port", "clock", "log_level",
    }
)  # fmt: skip


@contextlib.contextmanager
def spawn(*, startup_timeout: float = 60.0, **kwargs: Any) -> Iterator[SpawnedSimulator]:
    """Run ``main`` in a subprocess and yield where it serves; terminate it on exit.

    Parameters
    ----------
    startup_timeout : float
        Seconds to wait for the server's JSON line.
    **kwargs
        ``Simulator`` options (``seed``, ``sizes``, ``latency`` ...), passed as command-line flags.
        ``port`` defaults to 0 (a free port).

    Yields
    ------
    SpawnedSimulator
        ``base_url``, ``token``, ``conversation_uuids`` and ``pid`` of the running server. Its
        ground truth is ``Simulator(seed=..., sizes=...).ground_truth()`` built in-process.

    Examples
    --------
    >>> with spawn(seed=1, sizes="1000x20", latency=0.02) as sim:  # doctest: +SKIP
    ...     client = MihuClient(base_url=sim.base_url, token=sim.token, cache=None)
    """
    unknown = set(kwargs) - _SPAWN_OPTIONS
    if unknown:
        raise TypeError(f"spawn() got unknown options {sorted(unknown)}")
    kwargs.setdefault("port", 0)
    argv = [sys.executable, "-m", "mihu_frames.simulator"]
    for name, value in kwargs.items():
        if value is None:
            continue
        if name == "sizes" and not isinstance(value, str):
            value = ",".join(str(int(n)) for n in value)
        argv += [f"--{name.replace('_', '-')}", str(value)]
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    try:
        lines: queue.Queue[bytes] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        reader = threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True)
        reader.start()
        try:
            line = lines.get(timeout=startup_timeout)
        except queue.Empty:
            raise RuntimeError(f"simulator did not start within {startup_timeout} s") from None
        if not line:
            raise RuntimeError(f"simulator exited with status {process.wait()} before serving")
        info = json.loads(line)
        logger.debug("spawned simulator pid %d at %s", process.pid, info["base_url"])
        yield SpawnedSimulator(
            base_url=info["base_url"],
            token=info["token"],
            conversation_uuids=list(info["conversations"]),
            pid=process.pid,
            process=process,
        )
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    raise SystemExit(main())
