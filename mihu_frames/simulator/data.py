"""The simulator's data: conversations and sessions generated from ``(seed, sizes)``, and changes.

Generation is seeded (``random.Random``, one generator per conversation) and every timestamp is
relative to a fixed instant (``BASE_INSTANT``), so a ``Simulator(seed=s, sizes=z)`` built in
another process has the same ground truth. The data looks like production data: timestamps in
mixed ISO 8601 formats and offsets, non-ASCII contact names, nulls, undocumented extra fields,
zero-length sessions, open sessions. A conversation's sessions are generated on first use.

Sessions are serialised to JSON once; a page is a join of byte chunks over an ordering cached per
(conversation, filters, sort) and dropped when that conversation's data changes. ``Dataset`` holds
the conversations and makes every change (new sessions, activity, deletions, new conversations)
under its lock, with timestamps from the clock it is given.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from random import Random
from typing import Any

logger = logging.getLogger(__name__)

#: Generated data starts at this instant and spans ``_SPAN_DAYS`` days after it.
BASE_INSTANT: datetime = datetime(2026, 1, 5, tzinfo=timezone.utc)
_SPAN_DAYS = 300
#: End of the generated span: no generated timestamp is later, and the open (``active``) sessions
#: are exactly those still running at it. The simulated clock (``Simulator.now``) starts here.
DATA_END: datetime = BASE_INSTANT + timedelta(days=_SPAN_DAYS)

STATUSES: tuple[str, ...] = ("active", "completed", "timed_out")
TYPES: tuple[str, ...] = ("text", "voice")
SORT_KEYS: tuple[str, ...] = ("created_at", "updated_at", "started_at", "last_activity_at")
TIMESTAMPS: tuple[str, ...] = (
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
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BASE_US = (BASE_INSTANT - EPOCH_UTC) // timedelta(microseconds=1)
END_US = (DATA_END - EPOCH_UTC) // timedelta(microseconds=1)  # a whole second
_BASE_WEEKDAY = BASE_INSTANT.weekday()
_TIMEOUT_US = 15 * _MIN  # a timed-out session ends this long after its last activity
_COMPLETED_SHARE = 0.74 / 0.94  # of the ended sessions; the others timed out
#: Open sessions at ``DATA_END``: Poisson with mean size / _SESSIONS_PER_OPEN (about one per 10
#: sessions a day), at least one from _MIN_OPEN_SIZE sessions. See ``_open_at_end``.
_SESSIONS_PER_OPEN = 3000
_MIN_OPEN_SIZE = 200

ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

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
CHANNELS = ("whatsapp", "web", "sms", "phone", "instagram")
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
    return name, ENCODER.encode(contact).encode("utf-8")


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
            extras[key] = rng.choice(CHANNELS)
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
class Session:
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
                b"null" if self.summary is None else ENCODER.encode(self.summary).encode(),
                middle.encode(),
                b"null" if self.contact is None else self.contact[1],
                tail.encode(),
                b"," + ENCODER.encode(self.extras)[1:-1].encode() if self.extras else b"",
                b"}",
            )
        )


class Conversation:
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
        "view",
    )

    def __init__(self, seed: int, index: int, size: int) -> None:
        self._rng = Random(f"mihu_frames.simulator:{seed}:{index}")
        self._size = size
        self._sessions: list[Session] | None = None
        self.uuid = _uuid4(self._rng)
        self.index = index
        self.next_seq = 0
        # cached orderings: (status, type, sort_by, sort_dir) -> session bodies in served order
        self.orders: dict[tuple[str | None, str | None, str, str], list[bytes]] = {}
        self.agents: list[str] = []
        self.campaigns: list[str] = []
        self.listings: list[str] = []
        self.contacts: list[tuple[str, bytes]] = []
        self.view: Any = None  # the listing's record of it (see listing.py), cached like orders

    @property
    def generated(self) -> bool:
        return self._sessions is not None

    @property
    def sessions(self) -> list[Session]:
        """Sessions in insertion (``seq``) order, which is also ``created_at`` ascending."""
        if self._sessions is None:
            self._sessions = self._generate()
        return self._sessions

    @sessions.setter
    def sessions(self, value: list[Session]) -> None:
        self._sessions = value

    def changed(self) -> None:
        """Drop what is derived from the sessions (orderings, listing record) after a change."""
        self.orders.clear()
        self.view = None

    def take_seq(self) -> int:
        self.next_seq += 1
        return self.next_seq

    def _generate(self) -> list[Session]:
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


def _new_session(rng: Random, conv: Conversation, status: str, kind: str) -> Session:
    """A session with every non-timestamp field drawn (no summary yet)."""
    r = rng.random
    s = Session()
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


def _generate_session(rng: Random, conv: Conversation) -> Session:
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


def _open_at_end(rng: Random, sessions: list[Session]) -> None:
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
        started = END_US - max(1, int(rng.random() * duration))
        _set_times(rng, s, started, duration, zero=False, force_open=True)


#: The order in which a session's timestamp formats are drawn (the data depends on it).
_FORMAT_DRAWS = (
    "started_at",
    "created_at",
    "last_activity_at",
    "ended_at",
    "evaluated_at",
    "summary_generated_at",
    "updated_at",
)


def _set_times(
    rng: Random,
    s: Session,
    started: int,
    duration: int,
    *,
    zero: bool,
    force_open: bool = False,
) -> None:
    """Set the timestamps (and summary) of ``s``, which starts at ``started`` (< ``END_US``).

    ``s.status`` is the way it ends (completed or timed_out); it becomes ``active`` when that end
    is after ``DATA_END`` (or ``force_open``). Evaluations and summaries not done by ``DATA_END``
    are left null.
    """
    r = rng.random
    table = _FORMAT_TABLE
    if zero:
        started -= started % _SEC  # every format can express it, so all three stay equal
    fmt = {name: table[int(r() * len(table))] for name in _FORMAT_DRAWS}
    start = _fit(started, 0, fmt["started_at"][0])
    lag = 0 if r() < 0.5 else int(r() * 2 * _SEC)
    created = _fit(start - lag, 0, fmt["created_at"][0])
    completed = s.status == "completed"
    idle = min(duration, int(r() * 90 * _SEC)) if completed and not zero else 0
    last_raw = start + duration - idle  # the last activity
    closes = start + duration + (0 if completed else _TIMEOUT_US)  # when it ends
    s.summary = None
    if force_open or closes > END_US:  # still running at the end of the span
        s.status = "active"
        if last_raw > END_US:  # activity goes on: the latest was in the last 90 s
            last_raw = END_US - int(r() * min(END_US - start, 90 * _SEC))
        last = _fit(last_raw, start, fmt["last_activity_at"][0])
        times: dict[str, int | None] = {
            "started_at": start,
            "ended_at": None,
            "last_activity_at": last,
            "evaluated_at": None,
            "summary_generated_at": None,
        }
        latest = last
    else:
        times, latest = _closed_times(rng, s, start, start + duration, last_raw, fmt)
    bump = 0 if r() < 0.3 else int(r() * 5 * _SEC)
    # never past the end of the span (open sessions reach it); END_US fits every precision
    updated = _fit(min(latest + bump, END_US), latest, fmt["updated_at"][0])
    s.times = {**times, "created_at": created, "updated_at": updated}
    s.tokens = {
        name: "null" if value is None else f'"{_iso(value, fmt[name])}"'
        for name, value in s.times.items()
    }


def _closed_times(
    rng: Random, s: Session, start: int, done: int, last_raw: int, fmt: dict[str, _Format]
) -> tuple[dict[str, int | None], int]:
    """The times of a session that ended by ``DATA_END`` (its work done at ``done``), from its
    start to its summary, and the latest of them. Sets its summary when one was generated."""
    completed = s.status == "completed"
    last = _fit(last_raw, start, fmt["last_activity_at"][0])
    if completed:
        end = _fit(done, last, fmt["ended_at"][0])
    else:
        end = _fit(last + _TIMEOUT_US, last, fmt["ended_at"][0])
    evaluated, generated = _after_end(rng, s, end, fmt)
    times = {
        "started_at": start,
        "ended_at": end,
        "last_activity_at": last,
        "evaluated_at": evaluated,
        "summary_generated_at": generated,
    }
    return times, max(t for t in (end, evaluated, generated) if t is not None)


def _after_end(
    rng: Random, s: Session, end: int, fmt: dict[str, _Format]
) -> tuple[int | None, int | None]:
    """When an ended session was evaluated and its summary generated (None: not by
    ``DATA_END``, or never); sets the summary when one was generated."""
    r = rng.random
    evaluated = generated = None
    evaluate = r() < (0.88 if s.status == "completed" else 0.35)
    if evaluate:
        delay = _lognormal_us(rng, _LOG_45, 1.0, 2 * 3600.0)
        when = _fit(end + delay, end, fmt["evaluated_at"][0])
        if when <= END_US:  # else still pending at the end of the span
            evaluated = when
    if r() < (0.92 if evaluate else 0.15):
        delay = _lognormal_us(rng, _LOG_30, 1.0, 2 * 3600.0)
        when = _fit(end + delay, end, fmt["summary_generated_at"][0])
        if when <= END_US:
            generated = when
            s.summary = _make_summary(rng, s.contact[0] if s.contact else "The customer")
    return evaluated, generated


# --- the dataset -------------------------------------------------------------------------------
class Dataset:
    """The conversations and their sessions, and every change made to them, behind one lock.

    Parameters
    ----------
    seed : int
        Seed of the generated data; with ``sizes`` it fully determines the ground truth.
    sizes : sequence of int
        Sessions per conversation, one conversation each, in order.
    now_us : callable
        The clock of changes: "now" in epoch microseconds (``Simulator.now``).

    Attributes
    ----------
    lock : threading.RLock
        Held by every method; hold it to read ``conversations`` consistently.
    conversations : dict of str to Conversation
        By UUID (lower-case), in creation order.
    uuids : list of str
        The conversation UUIDs in creation order (the list ``Simulator.conversation_uuids`` is).
    latest_us : int
        The latest instant handed out to a change (never before ``DATA_END``).
    """

    def __init__(self, seed: int, sizes: Sequence[int], now_us: Callable[[], int]) -> None:
        self.seed = seed
        self.lock = threading.RLock()
        self.conversations: dict[str, Conversation] = {}
        self.uuids: list[str] = []
        self.latest_us = END_US  # no generated instant is later
        self._now_us = now_us
        self._rng = Random(f"mihu_frames.simulator.mutations:{seed}")
        for size in sizes:
            self._add_conversation(size)

    # --- reading ---------------------------------------------------------------------------
    def conversation(self, conversation: str) -> Conversation:
        """The conversation, its sessions generated.

        Raises
        ------
        KeyError
            If there is no such conversation.
        """
        with self.lock:
            try:
                conv = self.conversations[conversation.lower()]
            except KeyError:
                raise KeyError(f"unknown conversation {conversation!r}") from None
            _ = conv.sessions
            return conv

    def generate_all(self) -> None:
        """Generate every conversation now rather than on first use."""
        with self.lock:
            for conv in self.conversations.values():
                _ = conv.sessions

    def ground_truth(
        self, conversation: str | None, status: str | None, type_: str | None
    ) -> list[dict[str, Any]]:
        """The sessions as served, ``created_at`` ascending (see ``Simulator.ground_truth``)."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if type_ is not None and type_ not in TYPES:
            raise ValueError(f"type must be one of {TYPES}, got {type_!r}")
        with self.lock:
            if conversation is None:
                keyed = [
                    ((s.times["created_at"] or 0, c.index, s.seq), s)
                    for c in self.conversations.values()
                    for s in c.sessions
                ]
                keyed.sort(key=lambda pair: pair[0])
                sessions = [s for _, s in keyed]
            else:
                sessions = list(self.conversation(conversation).sessions)
            bodies = [
                s.body
                for s in sessions
                if (status is None or s.status == status) and (type_ is None or s.type == type_)
            ]
        return [json.loads(body) for body in bodies]

    def tags(self) -> dict[str, tuple[str, str]]:
        """``{session uuid: (status, type)}`` for every session."""
        with self.lock:
            return {
                s.uuid: (s.status, s.type) for c in self.conversations.values() for s in c.sessions
            }

    def sessions_page(
        self,
        conversation: str,
        *,
        status: str | None,
        type_: str | None,
        sort_by: str,
        desc: bool,
        page: int,
        per_page: int,
        drift: int = 0,
    ) -> tuple[int, list[bytes]] | None:
        """``(total, session bodies of the page)``; None for an unknown conversation.

        With ``drift`` > 0 the conversation first gets ``drift`` new sessions and ``drift``
        touched ones, in the same locked step, so the page reflects them.
        """
        with self.lock:
            conv = self.conversations.get(conversation)
            if conv is None:
                return None
            if drift > 0:
                self.add_sessions(conv.uuid, drift)
                self.touch_sessions(conv.uuid, drift)
            order = self._order(conv, status, type_, sort_by, desc)
            start = (page - 1) * per_page
            items = order[start : start + per_page] if start < len(order) else []
            return len(order), items

    # --- changes ---------------------------------------------------------------------------
    def add_conversation(self, size: int) -> str:
        """A new conversation of ``size`` sessions; see ``Simulator.add_conversation``."""
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        with self.lock:
            return self._add_conversation(size)

    def add_sessions(self, conversation: str, n: int) -> list[str]:
        """Add ``n`` new open sessions; see ``Simulator.add_sessions``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self._rng
        with self.lock:
            conv = self.conversation(conversation)
            added: list[str] = []
            for _ in range(n):
                s = _new_session(rng, conv, "active", "text" if rng.random() < 0.65 else "voice")
                now = self._tick()
                fmt = self._now_format()
                opened = ("started_at", "last_activity_at", "created_at", "updated_at")
                s.times = {name: now if name in opened else None for name in TIMESTAMPS}
                token = f'"{_iso(now, fmt)}"'
                s.tokens = {name: token if name in opened else "null" for name in TIMESTAMPS}
                s.seq = conv.take_seq()
                s.encode()
                conv.sessions.append(s)
                added.append(s.uuid)
            conv.changed()
        return added

    def touch_sessions(self, conversation: str, n: int) -> list[str]:
        """Record new activity on ``n`` sessions; see ``Simulator.touch_sessions``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = self._rng
        with self.lock:
            conv = self.conversation(conversation)
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
                conv.changed()
        return [s.uuid for s in chosen]

    def delete_sessions(self, conversation: str, n: int) -> list[str]:
        """Delete ``n`` random sessions; see ``Simulator.delete_sessions``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        with self.lock:
            conv = self.conversation(conversation)
            doomed = self._rng.sample(conv.sessions, min(n, len(conv.sessions)))
            gone = {id(s) for s in doomed}
            conv.sessions = [s for s in conv.sessions if id(s) not in gone]
            if doomed:
                conv.changed()
        return [s.uuid for s in doomed]

    def share_session(self, session: str, conversation: str) -> None:
        """Serve ``session`` under ``conversation`` too; see ``Simulator.share_session``."""
        with self.lock:
            conv = self.conversation(conversation)
            if any(s.uuid == session for s in conv.sessions):
                raise ValueError(f"session {session!r} is already served under {conversation!r}")
            for other in self.conversations.values():
                found = next((s for s in other.sessions if s.uuid == session), None)
                if found is not None:
                    break
            else:
                raise KeyError(f"unknown session {session!r}")
            copy = Session()
            for name in Session.__slots__:
                setattr(copy, name, getattr(found, name))
            copy.times = dict(found.times)
            copy.tokens = dict(found.tokens)
            copy.tasks = list(found.tasks)
            copy.conversation = conv.uuid
            copy.seq = conv.take_seq()
            copy.encode()
            # sessions stay in created_at order (the served order of ground_truth)
            key = found.times["created_at"] or 0
            at = next(
                (i for i, s in enumerate(conv.sessions) if (s.times["created_at"] or 0) > key),
                len(conv.sessions),
            )
            conv.sessions.insert(at, copy)
            conv.changed()

    def upper_case_ids(self, conversation: str) -> None:
        """Serve the conversation's id upper-case in its sessions; see ``Simulator``."""
        with self.lock:
            conv = self.conversation(conversation)
            for s in conv.sessions:
                s.conversation = s.conversation.upper()
                s.encode()
            conv.changed()

    def set_timestamp(self, session: str, name: str, text: str) -> None:
        """Serve timestamp ``name`` of ``session`` as ``text``; see ``Simulator.set_timestamp``."""
        if name not in TIMESTAMPS:
            raise ValueError(f"name must be one of {TIMESTAMPS}, got {name!r}")
        instant = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        offset = instant.utcoffset() or timedelta(0)
        local = instant.replace(tzinfo=timezone.utc)  # may be past year 9999 once shifted
        micros = (local - EPOCH_UTC) // timedelta(microseconds=1)
        micros -= offset // timedelta(microseconds=1)
        with self.lock:
            for conv in self.conversations.values():
                for item in conv.sessions:
                    if item.uuid == session:
                        item.times[name] = micros
                        item.tokens[name] = ENCODER.encode(text)
                        item.encode()
                        conv.changed()
                        return
        raise KeyError(f"unknown session {session!r}")

    # --- internals -------------------------------------------------------------------------
    def _add_conversation(self, size: int) -> str:
        conv = Conversation(self.seed, len(self.uuids), size)
        self.conversations[conv.uuid] = conv
        self.uuids.append(conv.uuid)
        return conv.uuid

    def _tick(self) -> int:
        """Now in epoch microseconds, strictly after every instant handed out before."""
        self.latest_us = max(self._now_us(), self.latest_us + 1)
        return self.latest_us

    def _now_format(self) -> _Format:
        rng = self._rng
        if rng.random() < 0.85:
            return _MICROS_Z
        minutes = rng.choice(_OFFSETS)
        return (1, 6, minutes * _MIN, _offset_text(minutes))

    def _order(
        self, conv: Conversation, status: str | None, type_: str | None, sort_by: str, desc: bool
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
