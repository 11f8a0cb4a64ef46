"""Hostile and odd data (issue 5, part 2): property-based tests of the page decoder.

Valid pages are generated from ``data/session_page.schema.json`` (a strategy builder below reads
the schema; every generated page is validated against it), then mutated: missing keys, nulls
everywhere, wrong types, timestamps in other ISO 8601 forms or garbage, huge strings, duplicate
uuids across pages, ``last_page`` smaller than ``current_page``, a ``total`` that disagrees with
the rows. A model written here, independently of mihu_frames, says for every page what the frame
must hold and which fields an error may name. Every case must end in that frame or in a
``ResponseFormatError`` naming a field the model allows and the page's conversation: never a
``KeyError``, ``TypeError``, ``ArrowInvalid`` or a silently wrong row.

Cases that crash the interpreter (pyarrow segfaults) run in a subprocess.
"""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import textwrap
import threading
import uuid as uuidlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

import mihu_frames as mf
from mihu_frames.decoding import PageInfo, decode_pages
from mihu_frames.decoding import arrow as arrow_module
from mihu_frames.decoding import extra as extra_module
from mihu_frames.frame import finish
from mihu_frames.schema import to_pandas
from mihu_frames.simulator import Simulator

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "session_page.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())

# The documented session, spelled out here rather than imported, so the model is independent.
TIMESTAMPS = (
    "started_at",
    "ended_at",
    "last_activity_at",
    "evaluated_at",
    "summary_generated_at",
    "created_at",
    "updated_at",
)
STRINGS = ("summary", "agent_uuid", "call_uuid", "campaign_uuid", "listing_uuid")
CONTACT = ("uuid", "name", "surname", "phone_number", "email")
DOCUMENTED = frozenset(
    {"uuid", *TIMESTAMPS, *STRINGS, "conversation_uuid", "contact", "task_uuids"}
)
COUNTERS = ("current_page", "total", "last_page", "per_page")
PAGINATOR = frozenset({"data.current_page", "data.total", "data.last_page", "data.per_page"})
STATUSES = ("active", "completed", "timed_out")
TYPES = ("text", "voice")
UTC = timezone.utc

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --------------------------------------------------------------------------- timestamp oracle

_ISO = re.compile(
    r"(?P<Y>\d{4})"
    r"(?:(?P<sep>[-/]?)(?P<M>\d{1,2})(?:(?P=sep)(?P<D>\d{1,2}))?)?"
    r"(?:(?P<T>[Tt ])(?P<h>\d{1,2})(?::?(?P<m>\d{1,2})(?::?(?P<s>\d{1,2})(?:[.,](?P<f>\d*))?)?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?"  # naive: doc says UTC
)


def oracle(text: str) -> tuple[datetime | None, bool]:
    """The instant an ISO 8601 string names, and whether the library must accept it.

    ``(None, False)``: not a timestamp; the library must reject it. ``(instant, True)``: an
    RFC 3339 form (or the naive form the library documents as UTC); the library must parse it.
    ``(instant, False)``: another ISO 8601 form; the library may reject it, and if it parses it,
    it must get this instant. Fractions finer than a microsecond are truncated (documented).
    """
    match = _ISO.fullmatch(text.strip())
    if match is None:
        return None, False
    g = match.groupdict()
    try:
        fraction = int((g["f"] or "")[:6].ljust(6, "0"))
        local = datetime(
            int(g["Y"]),
            int(g["M"] or 1),
            int(g["D"] or 1),
            int(g["h"] or 0),
            int(g["m"] or 0),
            int(g["s"] or 0),
            fraction,
        )
        offset = timedelta(0)
        if g["tz"] and g["tz"] not in "Zz":
            digits = g["tz"][1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:] or 0)
            if hours > 23 or minutes > 59:
                return None, False
            offset = timedelta(hours=hours, minutes=minutes) * (-1 if g["tz"][0] == "-" else 1)
        instant = (local - offset).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None, False
    # pandas holds nanoseconds: outside 1678-2261 a fallback parse may refuse (minor bug below)
    in_range = 1678 <= instant.year <= 2261
    return instant, _RFC3339.fullmatch(text) is not None and in_range


def is_rfc3339(text: str) -> bool:
    return _RFC3339.fullmatch(text) is not None and oracle(text)[0] is not None


def _format_checker() -> FormatChecker:
    checker = FormatChecker()

    @checker.checks("date-time")
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        return is_rfc3339(value)

    return checker


VALIDATOR = Draft202012Validator(SCHEMA, format_checker=_format_checker())


# --------------------------------------------------------------------------- strategies

#: Mostly recent instants, some anywhere pandas' nanoseconds reach (1678-2261; a timestamp
#: outside that range may be refused: a minor bug, tested on its own below).
instants = st.one_of(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    st.datetimes(min_value=datetime(1678, 1, 2), max_value=datetime(2261, 12, 30)),
)
offsets = st.one_of(
    st.just(0),
    st.integers(-12 * 4, 14 * 4).map(lambda q: q * 15),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)


_DIGITS = st.integers(0, 9)
_EXTRA_DIGITS = st.integers(0, 999)
_ZONES = st.sampled_from(["Z", "offset", "naive"])


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """An RFC 3339 timestamp (the documented form): Z, an offset or naive, 0-9 fraction digits."""
    local = draw(instants)
    digits = draw(_DIGITS)
    fraction = ""
    if digits:
        extra = draw(_EXTRA_DIGITS) if digits > 6 else 0
        fraction = "." + (f"{local.microsecond:06d}{extra:03d}")[:digits].ljust(digits, "0")
    zone = draw(_ZONES)
    minutes = draw(offsets) if zone == "offset" else 0
    suffix = {"Z": "Z", "naive": ""}.get(zone) or _offset(minutes, colon=True)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + suffix


RFC3339 = rfc3339()


def _offset(minutes: int, *, colon: bool) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}{':' if colon else ''}{rest:02d}"


@st.composite
def other_iso_forms(draw: st.DrawFn) -> str:
    """The same instants in other ISO 8601 spellings: basic format, +hhmm, +hh, a space, a
    comma, lower case, reduced precision, padding."""
    local = draw(instants)
    form = draw(
        st.sampled_from(
            ["basic", "hhmm", "hh", "space", "comma", "lower", "date", "minutes", "hour", "pad"]
        )
    )
    date, time_ = local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S")
    frac = f".{local.microsecond:06d}" if local.microsecond else ""
    if form == "basic":
        return local.strftime("%Y%m%dT%H%M%S") + "Z"
    if form == "hhmm":
        return f"{date}T{time_}{frac}{_offset(draw(offsets), colon=False)}"
    if form == "hh":
        return f"{date}T{time_}{frac}{_offset(draw(st.integers(-12, 14)) * 60, colon=False)[:3]}"
    if form == "space":
        return f"{date} {time_}{frac}Z"
    if form == "comma":
        return f"{date}T{time_},{local.microsecond:06d}Z"
    if form == "lower":
        return f"{date}t{time_}{frac}z"
    if form == "date":
        return date
    if form == "minutes":
        return local.strftime("%Y-%m-%dT%H:%M") + "Z"
    if form == "hour":
        return local.strftime("%Y-%m-%dT%H") + "Z"
    return f"  {date}T{time_}{frac}Z "


#: Words pandas turns into "the current time", and offsets that are not ±hh, ±hhmm or ±hh:mm,
#: which get a guessed meaning ("+05:3" is read as +05:03): bugs found before, tested below.
_NOW_WORDS = {"now", "today"}


def _malformed_offset(text: str) -> bool:
    tail = re.search(r"[+-][\d:]*\s*$", text)
    has_time = re.search(r"\d[Tt ]\d", text) is not None
    return has_time and tail is not None and not re.fullmatch(r"[+-]\d\d(:?\d\d)?\s*", tail[0])


@st.composite
def garbage_timestamps(draw: st.DrawFn) -> str:
    """Not-quite timestamps: a valid one with characters edited, or random text."""
    kind = draw(st.sampled_from(["edit", "text", "word"]))
    if kind == "word":
        return draw(
            st.sampled_from(
                [
                    "",
                    " ",
                    "NaT",
                    "nan",
                    "null",
                    "None",
                    "yesterday",
                    "tomorrow",
                    "epoch",
                    "infinity",
                    "-inf",
                    "0",
                    "1699335116",
                    "2023-02-30T00:00:00Z",
                    "2023-11-07T24:00:00Z",
                    "2016-12-31T23:59:60Z",
                    "2023-13-01T00:00:00Z",
                    "2023-11-07T05:31:56+24:00",
                    "2023-11-07T05:31:56UTC",
                    "Tue, 07 Nov 2023",
                    "11/07/2023",
                    "07.11.2023",
                    "2023-W45-2",
                    "2023-311",
                    "+2023-11-07T05:31:56Z",
                ]
            )
        )
    if kind == "text":
        text = draw(st.text(alphabet="0123456789-:+TZ .,/tzWabcnow", max_size=30))
    else:
        text = draw(RFC3339)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(["delete", "insert", "replace"]))
            char = draw(st.sampled_from(list("0123456789-:+TZ .,/xz")))
            if op == "delete":
                text = text[:at] + text[at + 1 :]
            elif op == "insert":
                text = text[:at] + char + text[at:]
            else:
                text = text[:at] + char + text[at + 1 :]
    if text.strip().lower() in _NOW_WORDS or _malformed_offset(text):
        text = "x" + text  # bugs found before, tested on their own below
    return text


uuids = st.uuids().map(str)
small_text = st.text(max_size=20)
#: Numbers as an API may send them: ints of any size and floats, mixed under one name.
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
#: Objects that differ in their members and hold explicit nulls.
small_objects = st.dictionaries(
    st.sampled_from(["a", "b", "x_f"]), st.one_of(st.none(), numbers), max_size=3
)
#: Undocumented fields, which ``extra`` must keep exactly as sent (the reader's inferred types
#: lose ints among floats, explicit nulls and absent members unless ``json.loads`` is asked).
#: The name says the type, so a key has one type per page.
extra_items = st.one_of(
    st.tuples(
        st.from_regex(r"x_s[a-z]{0,3}", fullmatch=True),
        st.text(max_size=10).filter(lambda s: not s.lstrip()[:1].isdigit()),  # no date-likes
    ),
    st.tuples(st.from_regex(r"x_i[a-z]{0,3}", fullmatch=True), st.integers(-(2**53), 2**53)),
    st.tuples(st.from_regex(r"x_b[a-z]{0,3}", fullmatch=True), st.booleans()),
    st.tuples(
        st.from_regex(r"x_l[a-z]{0,3}", fullmatch=True), st.lists(st.text(max_size=5), max_size=3)
    ),
    st.tuples(st.from_regex(r"x_f[a-z]{0,3}", fullmatch=True), numbers),
    st.tuples(st.from_regex(r"x_n[a-z]{0,3}", fullmatch=True), st.none()),
    st.tuples(st.from_regex(r"x_o[a-z]{0,3}", fullmatch=True), small_objects),
    st.tuples(st.from_regex(r"x_d[a-z]{0,3}", fullmatch=True), st.lists(small_objects, max_size=3)),
)
extras = st.lists(extra_items, max_size=3).map(dict)


def _resolve(ref: str) -> dict[str, Any]:
    node: Any = SCHEMA
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def from_schema(node: dict[str, Any], *, additional: bool = True) -> st.SearchStrategy[Any]:
    """A strategy for the subset of JSON Schema that ``session_page.schema.json`` uses."""
    if "$ref" in node:
        return from_schema(_resolve(node["$ref"]), additional=additional)
    if "anyOf" in node:
        return st.one_of([from_schema(n, additional=additional) for n in node["anyOf"]])
    if "const" in node:
        return st.just(node["const"])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(node.get("minimum"), node.get("maximum"))
    if kind == "string":
        return {"uuid": uuids, "date-time": RFC3339}.get(node.get("format"), small_text)
    if kind == "array":
        return st.lists(from_schema(node["items"]), max_size=min(node.get("maxItems", 4), 4))
    if kind == "object":
        properties = {k: from_schema(v) for k, v in node.get("properties", {}).items()}
        required = set(node.get("required", ()))
        base = st.fixed_dictionaries(
            {k: v for k, v in properties.items() if k in required},
            optional={k: v for k, v in properties.items() if k not in required},
        )
        if not additional or node.get("additionalProperties") is False:
            return base
        return st.tuples(base, extras).map(lambda pair: {**pair[0], **pair[1]})
    raise AssertionError(f"schema construct not covered: {node}")


sessions = from_schema(SCHEMA["$defs"]["session"])
fetch_times = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
)


@st.composite
def paginator(draw: st.DrawFn, page: int) -> tuple[int, int, int, int]:
    """(rows, per_page, last_page, total) for ``page``, consistent the way Laravel's are."""
    per_page = draw(st.integers(1, 6))
    case = draw(st.sampled_from(["last", "middle", "past_end"]))
    if case == "past_end" and page > 1:
        last = draw(st.integers(1, page - 1))
        total = draw(st.integers((last - 1) * per_page + (last > 1), last * per_page))
        return 0, per_page, last, total
    if case == "middle":
        last = draw(st.integers(page + 1, page + 3))
        total = draw(st.integers((last - 1) * per_page + 1, last * per_page))
        return per_page, per_page, last, total
    rows = draw(st.integers(0 if page == 1 else 1, per_page))
    return rows, per_page, page, (page - 1) * per_page + rows


_SESSION_LISTS = {n: st.lists(sessions, min_size=n, max_size=n) for n in range(7)}
_PAGINATORS = {n: paginator(n) for n in range(1, 5)}
_STATUS_TAGS = st.sampled_from((None, *STATUSES))
_TYPE_TAGS = st.sampled_from((None, *TYPES))
_MESSAGES = st.sampled_from(["Sessions retrieved successfully", ""])
_CONVERSATIONS = st.lists(uuids, min_size=1, max_size=3, unique=True)


@dataclass
class Page:
    payload: Any
    info: PageInfo
    body: bytes | None = None  # set for byte-level mutations; else json.dumps(payload)

    def encoded(self) -> bytes:
        if self.body is not None:
            return self.body
        # Even pages escape non-ASCII text, odd pages send raw UTF-8: both get exercised.
        return json.dumps(self.payload, ensure_ascii=self.info.page % 2 == 0).encode()


@st.composite
def valid_batches(draw: st.DrawFn, max_pages: int = 4) -> list[Page]:
    """1-4 schema-valid pages of 1-3 conversations, in a shuffled fetch order."""
    conversations = draw(_CONVERSATIONS)
    tags = [(draw(_STATUS_TAGS), draw(_TYPE_TAGS)) for _ in conversations]
    keys = draw(
        st.lists(
            st.tuples(st.integers(0, len(conversations) - 1), st.integers(1, 4)),
            min_size=1,
            max_size=max_pages,
            unique=True,
        )
    )
    pages = []
    for query, number in keys:
        rows, per_page, last, total = draw(_PAGINATORS[number])
        records = draw(_SESSION_LISTS[rows])
        for record in records:
            record["conversation_uuid"] = conversations[query]
        payload = {
            "success": True,
            "message": draw(_MESSAGES),
            "data": {
                "current_page": number,
                "total": total,
                "last_page": last,
                "per_page": per_page,
                "data": records,
            },
        }
        VALIDATOR.validate(payload)  # the generator and the schema file agree
        info = PageInfo(
            conversation=conversations[query],
            page=number,
            query=query,
            status=tags[query][0],
            type=tags[query][1],
            fetched_at=draw(fetch_times),
        )
        pages.append(Page(payload, info))
    return draw(st.permutations(pages))


# --------------------------------------------------------------------------- mutations

WRONG_VALUES = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    small_text,
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from("ab"), st.integers(0, 3), max_size=2),
)


def _sessions_of(pages: list[Page]) -> list[tuple[Page, int]]:
    return [
        (p, i)
        for p in pages
        if isinstance(p.payload, dict)
        and isinstance(p.payload.get("data"), dict)
        and isinstance(p.payload["data"].get("data"), list)
        for i, s in enumerate(p.payload["data"]["data"])
        if isinstance(s, dict)
    ]


@st.composite
def mutate(draw: st.DrawFn, pages: list[Page]) -> tuple[list[Page], list[str]]:
    """Apply 1-3 mutations; return the pages and what was done (for ``note``)."""
    done = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "drop_key",
                    "drop_contact_key",
                    "drop_envelope_key",
                    "nulls_everywhere",
                    "wrong_type",
                    "wrong_envelope_type",
                    "tasks_as_string",
                    "contact_as_list",
                    "other_iso_form",
                    "garbage_timestamp",
                    "huge_string",
                    "duplicate_uuid",
                    "last_page_below_current",
                    "total_disagrees",
                    "session_not_object",
                    "not_json",
                    "top_level_not_object",
                    "success_not_true",
                    "conversation_mismatch",
                ]
            )
        )
        page = draw(st.sampled_from(pages))
        payload = page.payload
        data = payload.get("data") if isinstance(payload, dict) else None
        data = data if isinstance(data, dict) else None
        targets = _sessions_of([page])
        session = None
        if targets:
            _, index = draw(st.sampled_from(targets))
            session = page.payload["data"]["data"][index]
        contact = session.get("contact") if session is not None else None
        if kind == "drop_key" and session:
            session.pop(draw(st.sampled_from(sorted(session))), None)
        elif kind == "drop_contact_key" and isinstance(contact, dict) and contact:
            contact.pop(draw(st.sampled_from(sorted(contact))), None)
        elif kind == "drop_envelope_key":
            where = draw(st.sampled_from(["top", "data"])) if data is not None else "top"
            holder = data if where == "data" else payload
            if isinstance(holder, dict) and holder:
                holder.pop(draw(st.sampled_from(sorted(holder))), None)
        elif kind == "nulls_everywhere":
            share = draw(st.floats(0.1, 1.0))
            for target, i in _sessions_of(pages):
                record = target.payload["data"]["data"][i]
                for key in sorted(DOCUMENTED):
                    if draw(st.floats(0, 1)) < share:
                        record[key] = None
                if isinstance(record.get("contact"), dict):
                    for key in CONTACT:
                        if draw(st.floats(0, 1)) < share:
                            record["contact"][key] = None
            if data is not None and draw(st.booleans()):
                data[draw(st.sampled_from([*COUNTERS, "data"]))] = None
            if isinstance(payload, dict) and draw(st.floats(0, 1)) < share / 4:
                payload[draw(st.sampled_from(["success", "message", "data"]))] = None
        elif kind == "wrong_type" and session is not None:
            key = draw(st.sampled_from(sorted(DOCUMENTED)))
            session[key] = draw(WRONG_VALUES)
            if key == "contact" and draw(st.booleans()):
                session[key] = {draw(st.sampled_from(CONTACT)): draw(WRONG_VALUES)}
        elif kind == "wrong_envelope_type" and data is not None:
            key = draw(st.sampled_from([*COUNTERS, "data"]))
            odd_numbers = st.one_of(st.integers(2**63, 2**70), st.sampled_from([1.0, 2.0, -1]))
            data[key] = draw(st.one_of(WRONG_VALUES, odd_numbers))
        elif kind == "tasks_as_string" and session is not None:
            session["task_uuids"] = draw(uuids)
        elif kind == "contact_as_list" and session is not None:
            session["contact"] = draw(st.lists(st.one_of(uuids, small_text), max_size=3))
        elif kind == "other_iso_form" and session is not None:
            session[draw(st.sampled_from(TIMESTAMPS))] = draw(other_iso_forms())
        elif kind == "garbage_timestamp" and session is not None:
            session[draw(st.sampled_from(TIMESTAMPS))] = draw(garbage_timestamps())
        elif kind == "huge_string" and session is not None:
            text = draw(st.text(min_size=1, max_size=4)) * draw(st.integers(10_000, 300_000))
            where = draw(st.sampled_from(["summary", "contact", "extra", "task"]))
            if where == "summary":
                session["summary"] = text
            elif where == "contact":
                session["contact"] = {
                    **(contact if isinstance(contact, dict) else {}),
                    "name": text,
                }
            elif where == "extra":
                session["x_s_huge"] = text
            else:
                session["task_uuids"] = [text]
        elif kind == "duplicate_uuid":
            everywhere = _sessions_of(pages)
            if len(everywhere) >= 2:
                (a, i), (b, j) = draw(st.lists(st.sampled_from(everywhere), min_size=2, max_size=2))
                source, target = a.payload["data"]["data"][i], b.payload["data"]["data"][j]
                target["uuid"] = source.get("uuid")
                if draw(st.booleans()):
                    target["updated_at"] = draw(st.one_of(st.none(), RFC3339))
        elif kind == "last_page_below_current" and data is not None:
            current = data.get("current_page")
            if isinstance(current, int) and not isinstance(current, bool) and current > 1:
                data["last_page"] = draw(st.integers(1, current - 1))
        elif kind == "total_disagrees" and data is not None:
            data["total"] = draw(st.integers(0, 50))
        elif (
            kind == "session_not_object" and data is not None and isinstance(data.get("data"), list)
        ):
            records = data["data"]
            value = draw(st.one_of(st.none(), small_text, st.integers(), st.lists(uuids)))
            if records and draw(st.booleans()):
                records[draw(st.integers(0, len(records) - 1))] = value
            else:
                records.append(value)
        elif kind == "not_json":
            body = page.encoded()
            page.body = draw(
                st.sampled_from(
                    [body[: max(1, len(body) // 2)], b"<html>502 Bad Gateway</html>", b"", b"{"]
                )
            )
        elif kind == "top_level_not_object":
            # ``null`` itself crashes pyarrow; it has its own subprocess test below.
            page.payload = draw(
                st.one_of(st.lists(st.integers(), max_size=2), small_text, st.booleans())
            )
            page.body = None
        elif kind == "success_not_true" and isinstance(payload, dict):
            payload["success"] = draw(st.sampled_from([False, "true", 1, None]))
        elif kind == "conversation_mismatch" and session is not None:
            session["conversation_uuid"] = draw(
                st.one_of(uuids, st.just(page.info.conversation.upper()))
            )
        else:
            continue
        done.append(f"{kind} on {page.info.conversation[:8]} p{page.info.page}")
    return pages, done


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class AnyOf:
    """A cell for which more than one value is correct."""

    options: tuple[Any, ...]


@dataclass
class Expected:
    """What one page must decode to: rows, or an error naming one of ``must | may``."""

    info: PageInfo
    rows: list[dict[str, Any]] = field(default_factory=list)
    must: set[str | None] = field(default_factory=set)  # non-empty: the page must be rejected
    may: set[str | None] = field(default_factory=set)  # fields it may be rejected for

    @property
    def allowed(self) -> set[str | None]:
        return self.must | self.may


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expect_page(body: bytes, info: PageInfo) -> Expected:
    out = Expected(info)
    try:
        payload = json.loads(body)
    except ValueError:
        out.must.add(None)
        return out
    if not isinstance(payload, dict):
        out.must.add(None)
        return out
    if payload.get("success") is not True:
        out.must.add("success")
    data = payload.get("data")
    if not isinstance(data, dict):
        out.must.add("data")
        return out
    counters: dict[str, int] = {}
    for name in COUNTERS:
        value = data.get(name)
        if _is_int(value) and abs(value) < 2**63:
            counters[name] = value
        elif _is_int(value) or (isinstance(value, float) and value.is_integer()):
            out.may.add(f"data.{name}")  # 1.0, or beyond int64: may be taken or refused
            if _is_int(value):
                counters[name] = value
        else:
            out.must.add(f"data.{name}")
    records = data.get("data")
    if not isinstance(records, list):
        out.must.add("data.data")
        return out
    if len(counters) == 4:
        current, total, last, per_page = (counters[n] for n in COUNTERS)
        rows = len(records)
        if current != info.page:
            out.must.add("data.current_page")
        if last < 1 or per_page < 1 or total < 0:
            out.must.update({"data.last_page", "data.per_page", "data.total"})
        elif rows > per_page:
            out.must.update({"data.data", "data.per_page"})
        elif not _consistent(current, per_page, last, total, rows):
            out.may.update(PAGINATOR | {"data.data"})  # a checker may refuse the page
    for record in records:
        row = expect_record(record, info, out)
        if row is not None:
            out.rows.append(row)
    return out


def _consistent(page: int, per_page: int, last: int, total: int, rows: int) -> bool:
    if last != max(1, math.ceil(total / per_page)):
        return False
    if page < last:
        return rows == per_page
    if page == last:
        return rows == total - (last - 1) * per_page
    return rows == 0


def expect_record(record: Any, info: PageInfo, out: Expected) -> dict[str, Any] | None:
    if not isinstance(record, dict):
        out.must.add("data.data")
        return None
    row: dict[str, Any] = {}
    uuid = record.get("uuid")
    if not isinstance(uuid, str):
        out.must.add("uuid")
    else:  # ids are canonical lower case in a frame, whatever case they were sent in
        uuid = _id(uuid)
    conversation = record.get("conversation_uuid")
    if conversation is None:
        row["conversation_uuid"] = _id(info.conversation)
    elif not isinstance(conversation, str):
        out.must.add("conversation_uuid")
    elif conversation != info.conversation:
        out.may.add("conversation_uuid")
        row["conversation_uuid"] = AnyOf((_id(conversation), _id(info.conversation)))
    else:
        row["conversation_uuid"] = _id(conversation)
    row["uuid"] = uuid
    # the API never sends a session's status or type: a row fetched without the filter is
    # "untagged" in pandas (null in Arrow)
    row["status"], row["type"] = info.status or "untagged", info.type or "untagged"
    for name in TIMESTAMPS:
        value = record.get(name)
        if value is None:
            row[name] = None
        elif not isinstance(value, str):
            out.must.add(name)
        else:
            instant, strict = oracle(value)
            if instant is None:
                out.must.add(name)
            elif not strict:
                out.may.add(name)
            row[name] = instant
    if all(name in row for name in TIMESTAMPS):
        started, ended = row["started_at"], row["ended_at"]
        row["duration"] = _minus(ended, started)
        row["time_to_evaluation"] = _minus(row["evaluated_at"], ended)
        row["time_to_summary"] = _minus(row["summary_generated_at"], ended)
        row["idle_before_end"] = _minus(ended, row["last_activity_at"])
        row["is_open"] = ended is None
    for name in STRINGS:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            out.must.add(name)
        row[name] = value
    contact = record.get("contact")
    extra = {k: v for k, v in record.items() if k not in DOCUMENTED}
    if contact is None:
        contact = {}
    elif contact in ([], ""):  # PHP's empty array; an empty string: no contact either way
        out.may.add("contact")
        contact = {}
    elif not isinstance(contact, dict):
        out.must.add("contact")
        contact = {}
    for name in CONTACT:
        value = contact.get(name)
        if value is not None and not isinstance(value, str):
            out.must.add(f"contact.{name}")
        row[f"contact_{name}"] = value
    contact_extra = {k: v for k, v in contact.items() if k not in CONTACT}
    if contact_extra:
        extra["contact"] = contact_extra
    tasks = record.get("task_uuids")
    if tasks is None:
        tasks = []
    elif not isinstance(tasks, list) or not all(t is None or isinstance(t, str) for t in tasks):
        out.must.add("task_uuids")
        tasks = []
    elif None in tasks:
        out.may.add("task_uuids")  # kept as sent, or refused
    row["task_uuids"] = tasks
    row["task_count"] = len(tasks)
    row["extra"] = extra or None
    row["fetched_at"] = info.fetched_at
    return row


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _id(text: str | None) -> str | None:
    """An id as a frame holds it: its ASCII letters lower case (a UUID's hex digits)."""
    return None if text is None else text.translate(_ASCII_LOWER)


def _minus(a: datetime | None, b: datetime | None) -> timedelta | None:
    return None if a is None or b is None else a - b


def expected_frame(pages: list[Expected]) -> list[dict[str, Any]]:
    """Rows in fetch order (query, page), one per uuid: latest updated_at, then latest fetch,
    then the first seen; the kept row stays where it was."""
    ordered = sorted(pages, key=lambda p: (p.info.query, p.info.page))
    rows = [row for page in ordered for row in page.rows]
    best: dict[str, int] = {}
    for index, row in enumerate(rows):
        held = best.get(row["uuid"])
        if held is None or _rank(row) > _rank(rows[held]):
            best[row["uuid"]] = index
    return [rows[i] for i in sorted(best.values())]


def _rank(row: dict[str, Any]) -> tuple[Any, ...]:
    updated, fetched = row["updated_at"], row["fetched_at"]
    low = datetime.min.replace(tzinfo=UTC)
    return (updated is not None, updated or low, fetched is not None, fetched or low)


def frame_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in df.to_dict("records"):
        row = {}
        for key, value in record.items():
            if key == "task_uuids":
                row[key] = list(value)
            elif key == "extra":
                row[key] = None if value is None or value is pd.NA else json.loads(value)
            elif isinstance(value, pd.Timestamp):
                row[key] = value.to_pydatetime()
            elif isinstance(value, pd.Timedelta):
                row[key] = value.to_pytimedelta()
            elif value is None or value is pd.NA or value is pd.NaT or _nan(value):
                row[key] = None
            else:
                row[key] = value
        rows.append(row)
    return rows


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)  # a null category


def same_json(a: Any, b: Any) -> bool:
    """JSON equality that tells 1 from 1.0 and True from 1."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [r["uuid"] for r in got] == [r["uuid"] for r in want]
    for g, w in zip(got, want, strict=True):
        for key, expected in w.items():
            value = g[key]
            if isinstance(expected, AnyOf):
                assert value in expected.options, (w["uuid"], key, value, expected)
            elif expected is None:
                assert value is None, (w["uuid"], key, value)
            elif key == "extra":
                assert same_json(value, expected), (w["uuid"], key, value, expected)
            else:
                assert value == expected, (w["uuid"], key, value, expected)


EMPTY_DTYPES = mf.empty_frame().dtypes


def check(pages: list[Page], tally: Counter[str]) -> str:
    """Decode ``pages`` as one batch and hold the outcome against the model."""
    bodies = [p.encoded() for p in pages]
    infos = [p.info for p in pages]
    model = [expect_page(b, i) for b, i in zip(bodies, infos, strict=True)]
    try:
        table, envelopes = decode_pages(bodies, infos)
        df = to_pandas(finish([table]))
    except mf.ResponseFormatError as error:
        named = [
            m
            for m in model
            if (m.info.conversation, m.info.page) == (error.conversation, error.page)
        ]
        assert named, f"the error names no page of the batch: {error!r}"
        assert error.field in named[0].allowed, (error.field, named[0].allowed, str(error))
        assert error.conversation in str(error) and f"page {error.page}" in str(error)
        tally[f"error:{error.field}"] += 1
        return "error"
    refused = [m for m in model if m.must]
    assert not refused, f"accepted a page that must be refused: {[m.must for m in refused]}"
    assert df.dtypes.equals(EMPTY_DTYPES)
    assert_rows_equal(frame_rows(df), expected_frame(model))
    for envelope, body in zip(envelopes, bodies, strict=True):
        sent = json.loads(body)["data"]
        assert (envelope.current_page, envelope.last_page, envelope.total, envelope.per_page) == (
            sent["current_page"],
            sent["last_page"],
            sent["total"],
            sent["per_page"],
        )
        assert envelope.rows == len(sent["data"])
    tally["frame"] += 1
    return "frame"


def check_records(records: list[Any], tally: Counter[str]) -> str:
    """``sessions_frame`` on session dicts: the model's rows, or an error naming a field."""
    info = PageInfo(conversation=None, page=0)  # type: ignore[arg-type]
    model = Expected(info)
    for record in records:
        row = expect_record(record, info, model)
        if row is not None:
            model.rows.append(row)
    try:
        df = mf.sessions_frame(json.loads(json.dumps(records)))
    except mf.ResponseFormatError as error:
        assert error.field in model.allowed, (error.field, model.allowed, str(error))
        tally[f"records error:{error.field}"] += 1
        return "error"
    assert not model.must, f"sessions_frame accepted records that must be refused: {model.must}"
    assert df.dtypes.equals(EMPTY_DTYPES)
    assert_rows_equal(frame_rows(df), expected_frame([model]))
    tally["records frame"] += 1
    return "frame"


def report(name: str, tally: Counter[str]) -> None:
    examples = tally.pop("examples", 0)
    detail = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
    print(f"\n{name}: {examples} examples ({detail})")


# --------------------------------------------------------------------------- the schema file


def test_schema_file_is_valid_and_accepts_the_simulators_pages():
    Draft202012Validator.check_schema(SCHEMA)
    with Simulator(seed=23, sizes=[0, 3, 130]) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        for conversation in sim.conversation_uuids:
            url = f"{sim.base_url}/api/v1/conversations/{conversation}/sessions"
            for number in (1, 2):
                params = {"page": number, "per_page": 100}
                VALIDATOR.validate(requests.get(url, params=params, headers=headers).json())
    bad = {"success": True, "message": "", "data": {"current_page": 1, "total": 0}}
    assert not VALIDATOR.is_valid(bad)
    assert VALIDATOR.is_valid(
        {
            "success": True,
            "message": "",
            "data": {"current_page": 1, "total": 0, "last_page": 1, "per_page": 15, "data": []},
        }
    )


# --------------------------------------------------------------------------- properties


def test_valid_pages_decode_to_the_expected_frame():
    tally: Counter[str] = Counter()

    @PROPERTY
    @given(valid_batches())
    def valid(pages: list[Page]) -> None:
        tally["examples"] += 1
        tally["rows"] += sum(len(p.payload["data"]["data"]) for p in pages)
        assert check(pages, tally) == "frame"  # a valid page is never refused

    valid()
    report("valid pages", tally)


def test_sessions_frame_agrees_with_decode_pages():
    tally: Counter[str] = Counter()

    @settings(PROPERTY, max_examples=60)
    @given(valid_batches(max_pages=1))
    def agree(pages: list[Page]) -> None:
        tally["examples"] += 1
        page = pages[0]
        records = page.payload["data"]["data"]
        table, _ = decode_pages([page.encoded()], [page.info])
        decoded = to_pandas(finish([table]))
        built = mf.sessions_frame(
            json.loads(json.dumps(records)),
            status=page.info.status,
            type=page.info.type,
            fetched_at=page.info.fetched_at,
        )
        pd.testing.assert_frame_equal(built, decoded, check_exact=True)

    agree()
    report("sessions_frame == decode_pages", tally)


def test_mutated_pages_give_a_correct_frame_or_a_clear_error():
    tally: Counter[str] = Counter()

    @settings(PROPERTY, max_examples=200)
    @given(valid_batches(), st.data())
    def mutated(pages: list[Page], data: st.DataObject) -> None:
        tally["examples"] += 1
        pages, done = data.draw(mutate(pages))
        note(f"mutations: {done}")
        for kind in done:
            tally["mutation:" + kind.split(" ")[0]] += 1
        check(pages, tally)
        for page in pages:  # the same sessions through sessions_frame
            payload = json.loads(page.encoded()) if page.body is None else None
            records = (payload or {}).get("data") if isinstance(payload, dict) else None
            if isinstance(records, dict) and isinstance(records.get("data"), list):
                check_records(records["data"], tally)

    mutated()
    mutations = {k: tally.pop(k) for k in list(tally) if k.startswith("mutation:")}
    report("mutated pages", tally)
    print("  mutations applied: " + ", ".join(f"{k[9:]} {v}" for k, v in sorted(mutations.items())))
    assert len(mutations) >= 15  # every kind of mutation was exercised


@pytest.mark.parametrize("kind", ["other_iso_form", "garbage_timestamp", "rfc3339"])
def test_timestamp_forms_parse_right_or_are_refused(kind):
    tally: Counter[str] = Counter()
    forms = {"other_iso_form": other_iso_forms(), "garbage_timestamp": garbage_timestamps()}
    texts = forms.get(kind, rfc3339())

    @settings(PROPERTY, max_examples=120)
    @given(st.lists(texts, min_size=1, max_size=4), st.sampled_from(TIMESTAMPS))
    def forms_(values: list[str], name: str) -> None:
        tally["examples"] += 1
        records = [
            {"uuid": str(uuidlib.UUID(int=i + 1)), name: value} for i, value in enumerate(values)
        ]
        info = PageInfo(conversation=str(uuidlib.UUID(int=99)), page=1)
        payload = _single_page(records)
        outcome = check([Page(payload, info)], tally)
        assert outcome == "frame" or kind != "rfc3339"

    forms_()
    report(f"timestamps ({kind})", tally)


# --------------------------------------------------------------------------- huge values


def test_huge_strings_and_lists_are_kept_whole():
    summary = "ß😀x" * 4_000_000  # 12 M characters, 28 MB of UTF-8
    tasks = [str(uuidlib.UUID(int=i)) for i in range(100_000)]
    name = "N" * 1_000_000
    records = [
        {"uuid": str(uuidlib.UUID(int=1)), "summary": summary, "task_uuids": tasks},
        {"uuid": str(uuidlib.UUID(int=2)), "contact": {"name": name}, "x_s_note": name},
    ]
    payload = _single_page(records)
    info = PageInfo(conversation=str(uuidlib.UUID(int=9)), page=1)
    table, _ = decode_pages([json.dumps(payload, ensure_ascii=False).encode()], [info])
    df = to_pandas(finish([table]))
    assert df.loc[0, "summary"] == summary
    assert list(df.loc[0, "task_uuids"]) == tasks and df.loc[0, "task_count"] == 100_000
    assert df.loc[1, "contact_name"] == name
    assert json.loads(df.loc[1, "extra"]) == {"x_s_note": name}


# ------------------------------------------------------------ single cases (bugs found before)


def _single_page(records: list[Any]) -> dict[str, Any]:
    """The envelope of a one-page listing holding ``records``."""
    return {
        "success": True,
        "message": "",
        "data": {
            "current_page": 1,
            "total": len(records),
            "last_page": 1,
            "per_page": 15,
            "data": records,
        },
    }


def _one_session_page(record: dict[str, Any]) -> tuple[bytes, PageInfo]:
    payload = _single_page([record])
    return json.dumps(payload).encode(), PageInfo(conversation=str(uuidlib.UUID(int=7)), page=1)


U1 = "11111111-0d44-4b50-8888-8dd25736052a"
U2 = "22222222-0d44-4b50-8888-8dd25736052a"


@pytest.mark.parametrize("word", ["now", "today"])
def test_words_pandas_reads_as_now_are_refused(word):
    body, info = _one_session_page({"uuid": U1, "ended_at": word})
    with pytest.raises(mf.ResponseFormatError) as caught:
        decode_pages([body], [info])
    assert caught.value.field == "ended_at"


@pytest.mark.parametrize(
    "text",
    ["2023-11-07T05:31:56+05:3", "2023-11-07T05:31:56+053", "2023-11-07T05:31:56+5"],
)
def test_malformed_offsets_are_refused(text):
    body, info = _one_session_page({"uuid": U1, "ended_at": text})
    with pytest.raises(mf.ResponseFormatError) as caught:
        decode_pages([body], [info])
    assert caught.value.field == "ended_at"


@pytest.mark.parametrize("text", ["2263-01-01T00:00:00.0000000Z", "1600-01-01T00:00:00.1234567Z"])
def test_valid_timestamp_outside_pandas_nanosecond_range_parses(text):
    body, info = _one_session_page({"uuid": U1, "ended_at": text})
    table, _ = decode_pages([body], [info])
    assert to_pandas(finish([table])).loc[0, "ended_at"] == oracle(text)[0]


def _decode_records(records: list[dict[str, Any]]) -> pd.DataFrame:
    payload = _single_page(records)
    info = PageInfo(conversation=str(uuidlib.UUID(int=7)), page=1)
    table, _ = decode_pages([json.dumps(payload).encode()], [info])
    return to_pandas(finish([table]))


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([None], id="null-value-dropped"),
        pytest.param([{"a": 1}, {"b": 2}], id="objects-gain-null-keys"),
        pytest.param([1, 0.5], id="int-becomes-float"),
        pytest.param([2**64 + 1], id="big-int-loses-precision"),
        pytest.param([[{"a": 1}, {"b": 2}]], id="list-of-objects-gain-null-keys"),
    ],
)
def test_undocumented_fields_are_kept_exactly_as_sent(values):
    records = [{"uuid": str(uuidlib.UUID(int=i + 1)), "x": v} for i, v in enumerate(values)]
    df = _decode_records(records)
    got = [None if e is None or e is pd.NA else json.loads(e) for e in df["extra"]]
    assert all(same_json(g, {"x": v}) for g, v in zip(got, values, strict=True)), got
    # and the records path (sessions_frame) agrees with the bytes path
    assert list(mf.sessions_frame(records)["extra"]) == list(df["extra"])


def _sent_extra(record: dict[str, Any]) -> dict[str, Any] | None:
    """The undocumented part of a session as sent (the model, independent of mihu_frames)."""
    extra = {k: v for k, v in record.items() if k not in DOCUMENTED}
    contact = record.get("contact")
    if isinstance(contact, dict):
        nested = {k: v for k, v in contact.items() if k not in CONTACT}
        if nested:
            extra["contact"] = nested
    return extra or None


def _check_extra_as_sent(body: bytes) -> pd.DataFrame:
    """Decode one page; its ``extra`` must be what was sent and what ``sessions_frame`` says."""
    records = json.loads(body)["data"]["data"]
    info = PageInfo(conversation=str(uuidlib.UUID(int=7)), page=1)
    table, _ = decode_pages([body], [info])
    df = to_pandas(finish([table]))
    got = [None if e is None or e is pd.NA else json.loads(e) for e in df["extra"]]
    want = [_sent_extra(r) for r in records]
    assert all(same_json(g, w) for g, w in zip(got, want, strict=True)), (got, want)
    assert list(mf.sessions_frame(records)["extra"]) == list(df["extra"])
    return df


def _raw_page(sessions: list[str]) -> bytes:
    """A page body around session members written by hand (spellings json.dumps never uses)."""
    items = ",".join(
        f'{{"uuid": "{uuidlib.UUID(int=i + 1)}", {members}}}' for i, members in enumerate(sessions)
    )
    return (
        '{"success": true, "message": "", "data": {"current_page": 1, '
        f'"total": {len(sessions)}, "last_page": 1, "per_page": 15, "data": [{items}]}}}}'
    ).encode()


@pytest.mark.parametrize(
    "sessions",
    [
        pytest.param(['"x": {"a": null, "b": 1}', '"x": {"b": 2}'], id="null-in-nested-object"),
        pytest.param(['"x": {"f": 1}', '"x": {"f": 0.5}'], id="int-literal-in-nested-float"),
        pytest.param(['"x": {"f": [0.5, 3]}', '"x": {"f": []}'], id="int-in-a-list-of-floats"),
        pytest.param(
            ['"x": [{"a": 1}, {"b": [{"c": 1}, {"d": null}, null]}]', '"x": [{"c": "s"}]'],
            id="lists-of-objects-with-different-keys",
        ),
        pytest.param(
            ['"a.b(c)*+?": null, "[k]|^$": 1', '"a.b(c)*+?": 0.5, "[k]|^$": 2'],
            id="key-needing-regex-escaping",
        ),
        pytest.param(['"q\\"t": null, "b\\\\s": 1.5', '"q\\"t": 1.5'], id="quote-and-backslash"),
        pytest.param(['"\\u0078": null', '"x": 0.5'], id="key-written-with-escapes"),
        pytest.param(['"\\u00FC\\/": null', '"ü/": 0.5'], id="non-ascii-key-escaped-uppercase"),
        pytest.param(['"\\uD83D\\uDE00": null', '"😀": true'], id="astral-key-as-surrogates"),
        pytest.param(['"\\t": {"\\n": null}', '"\\t": {"\\n": 1.5}'], id="short-escapes-in-keys"),
        pytest.param(['"x" \t:\t null', '"x": 1'], id="whitespace-around-the-colon"),
        pytest.param(
            ['"label": "x", "x": 0.5', '"x": 0.25, "note": "\\"x\\": null"'],
            id="key-as-a-string-value-elsewhere",
        ),
        pytest.param(
            [
                '"x": -18446744073709551617',
                '"x": -9223372036854775809',
                '"x": -9223372036854775808',
                '"x": 0.5',
            ],
            id="big-negative-ints",
        ),
        pytest.param(
            ['"x": -9223372036854775808', '"x": 9223372036854775807'], id="int64-extremes"
        ),
        pytest.param(
            ['"x": 1e2', '"x": 0.10', '"x": -0.0', '"x": 1E-2', '"x": 2.5e+3'],
            id="float-spellings",
        ),
        pytest.param(
            ['"x": [1e2, 0.10, 3]', '"x": [[-0.0], [1.5]]'], id="float-spellings-in-lists"
        ),
        pytest.param(
            ['"contact": {"name": "n", "locale": null}', '"contact": {"locale": "tr"}'],
            id="null-in-contact",
        ),
        pytest.param(
            ['"contact": {"meta": {"a": 1}}', '"contact": {"meta": {"b": 1.5}}'],
            id="objects-in-contact",
        ),
    ],
)
def test_undocumented_values_are_kept_exactly_in_any_spelling(sessions):
    _check_extra_as_sent(_raw_page(sessions))


#: JSON values for undocumented fields: numbers, nulls, objects and lists of them, sometimes
#: with text and booleans (a name holding two kinds sends the batch to ``json.loads``).
_EXTRA_KEYS = st.one_of(st.sampled_from(["a", "b", "x"]), st.text(max_size=3))
_NUMERIC_VALUES = st.recursive(
    st.one_of(st.none(), numbers),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_EXTRA_KEYS, inner, max_size=3)
    ),
    max_leaves=8,
)
_ANY_VALUES = st.recursive(
    st.one_of(st.none(), numbers, st.booleans(), st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_EXTRA_KEYS, inner, max_size=3)
    ),
    max_leaves=8,
)
_SESSION_EXTRAS = st.dictionaries(
    _EXTRA_KEYS.filter(lambda k: k not in DOCUMENTED),
    st.one_of(_NUMERIC_VALUES, _NUMERIC_VALUES, _ANY_VALUES),
    max_size=3,
)
_CONTACT_EXTRAS = st.dictionaries(
    _EXTRA_KEYS.filter(lambda k: k not in CONTACT), _NUMERIC_VALUES, max_size=2
)


def _write_json(value: Any, rnd: random.Random) -> str:
    """JSON text of ``value`` in one of the many spellings JSON allows for it."""
    if isinstance(value, dict):
        members = [
            _write_key(k, rnd) + rnd.choice([":", " : ", "\t:", ":\r "]) + _write_json(v, rnd)
            for k, v in value.items()
        ]
        return "{" + rnd.choice([",", ", ", " ,\t"]).join(members) + "}"
    if isinstance(value, list):
        return "[" + rnd.choice([",", ", "]).join(_write_json(v, rnd) for v in value) + "]"
    if isinstance(value, float):
        return rnd.choice([repr(value), format(value, ".17e"), format(value, ".17E")])
    return json.dumps(value, ensure_ascii=rnd.random() < 0.5)


def _write_key(key: str, rnd: random.Random) -> str:
    spelled = []
    for char in key:
        forms = [json.dumps(char, ensure_ascii=False)[1:-1], json.dumps(char)[1:-1]]
        code = ord(char)
        if code < 0x10000:
            forms += [f"\\u{code:04x}", f"\\u{code:04X}"]
        else:
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            forms.append(f"\\u{high:04X}\\u{low:04X}")
        spelled.append(rnd.choice(forms))
    return '"' + "".join(spelled) + '"'


def test_undocumented_values_survive_any_json_spelling():
    tally: Counter[str] = Counter()
    reread = extra_module.exact_extras
    slowly = arrow_module.decode_page_slowly

    def count_reread(body: bytes, rows: int) -> list[str | None]:
        tally["pages re-read"] += 1
        return reread(body, rows)

    def count_slow(body: bytes, info: PageInfo) -> Any:
        tally["pages decoded slowly"] += 1
        return slowly(body, info)

    @settings(PROPERTY, max_examples=300)
    @given(
        st.lists(
            st.tuples(_SESSION_EXTRAS, st.one_of(st.none(), _CONTACT_EXTRAS)),
            min_size=1,
            max_size=4,
        ),
        st.integers(0, 2**32),
    )
    def spelled(sessions: list[tuple[dict[str, Any], dict[str, Any] | None]], seed: int) -> None:
        tally["examples"] += 1
        records = []
        for i, (extra, contact) in enumerate(sessions):
            record = {"uuid": str(uuidlib.UUID(int=i + 1)), **extra}
            if contact is not None:
                record["contact"] = {"name": "n", **contact}
            records.append(record)
        payload = _single_page(records)
        body = _write_json(payload, random.Random(seed)).encode()
        note(body.decode())
        before = tally["pages re-read"] + tally["pages decoded slowly"]
        _check_extra_as_sent(body)
        if tally["pages re-read"] + tally["pages decoded slowly"] == before:
            tally["pages rebuilt from Arrow"] += 1

    with (
        mock.patch.object(extra_module, "exact_extras", count_reread),
        mock.patch.object(arrow_module, "decode_page_slowly", count_slow),
    ):
        spelled()
    report("undocumented values in any spelling", tally)
    assert tally["pages re-read"] > 0 and tally["pages rebuilt from Arrow"] > 0


@pytest.mark.parametrize("value", ["2023-11-07T05:31:56Z", "2023-11-07", "2023-11-07 05:31:56"])
def test_date_like_undocumented_field_is_kept_as_text(value):
    df = _decode_records([{"uuid": U1, "closed_at": value}])
    assert json.loads(df.loc[0, "extra"]) == {"closed_at": value}


@pytest.mark.parametrize("value", ["hello", 5, {"a": 1}])
def test_field_named_like_the_internal_extra_column(value):
    df = _decode_records([{"uuid": U1, "__extra__": value}])
    assert json.loads(df.loc[0, "extra"]) == {"__extra__": value}


_BODY = '{{"success":true,"message":"","data":{{"current_page":1,"total":1,"last_page":1,"per_page":15,"data":[{{"uuid":"{u}","summary":{s}}}]}}}}'  # noqa: E501


@pytest.mark.parametrize(
    "summary",
    [
        pytest.param(b'"\xff\xfe"', id="invalid-utf8"),
        pytest.param(b'"\\ud800x"', id="lone-surrogate-escape"),
    ],
)
def test_text_that_is_not_unicode_is_a_format_error(summary):
    body = _BODY.format(u=U1, s="{s}").encode().replace(b"{s}", summary)
    info = PageInfo(conversation=U2, page=1)
    try:
        table, _ = decode_pages([body], [info])
    except mf.ResponseFormatError as error:
        assert (error.conversation, error.field) == (U2, "summary")
        return
    df = to_pandas(finish([table]))  # a frame: its text must be readable (e.g. U+FFFD)
    assert isinstance(df.loc[0, "summary"], str)
    table.validate(full=True)


def test_raw_control_character_in_a_string_is_refused_not_rewritten():
    body = _BODY.format(u=U1, s='"line one\nline two"').encode()
    info = PageInfo(conversation=U2, page=1)
    try:
        table, _ = decode_pages([body], [info])
    except mf.ResponseFormatError:
        return  # invalid JSON refused: fine
    summary = to_pandas(finish([table])).loc[0, "summary"]
    assert summary == "line one\nline two"  # or kept as sent; never silently rewritten


def _run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )


_ISOLATED = """
import mihu_frames as mf
from mihu_frames.decoding import PageInfo, decode_pages
body = {body!r}
try:
    decode_pages([body], [PageInfo(conversation="c", page=1)])
except mf.ResponseFormatError as exc:
    print("RFE", exc.conversation, exc.page, exc.field)
except BaseException as exc:
    print("OTHER", type(exc).__name__)
else:
    print("FRAME")
"""


@pytest.mark.parametrize("body", [b"null", b" null\n"])
def test_null_body_is_a_format_error_not_a_crash(body):
    done = _run_isolated(_ISOLATED.format(body=body))
    assert done.returncode == 0, f"the interpreter died: exit {done.returncode}"
    assert done.stdout.split() == ["RFE", "c", "1", "None"]


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deeply_nested_undocumented_field_is_handled(depth):
    value = b"[" * depth + b"]" * depth
    body = _BODY.format(u=U1, s="null").encode()[:-4] + b',"x":' + value + b"}]}}"
    done = _run_isolated(_ISOLATED.format(body=body))
    assert done.returncode == 0, f"the interpreter died: exit {done.returncode}"
    assert done.stdout.split()[0] in ("RFE", "FRAME"), done.stdout


# --------------------------------------------------------------------------- the HTTP path


class _CannedServer:
    """A tiny HTTP server that answers each (conversation, page) with a canned body."""

    def __init__(self, pages: dict[tuple[str, int], bytes]) -> None:
        self.pages = pages
        self.requests: list[tuple[str, int]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                conversation = split.path.split("/")[4]
                page = int(dict(parse_qsl(split.query)).get("page", "1"))
                owner.requests.append((conversation, page))
                body = owner.pages.get((conversation, page))
                status = 200 if body is not None else 404
                body = body if body is not None else b'{"success":false,"message":"Not found."}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _CannedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self, **options: Any) -> mf.MihuClient:
        return mf.MihuClient(self.base_url, token="t", cache=None, retries=0, **options)


def _session(n: int, conversation: str, **fields: Any) -> dict[str, Any]:
    return {
        "uuid": str(uuidlib.UUID(int=n)),
        "conversation_uuid": conversation,
        "created_at": f"2026-01-01T00:00:{n % 60:02d}Z",
        "updated_at": "2026-01-02T00:00:00Z",
        "task_uuids": [],
        **fields,
    }


def _body(page: int, per_page: int, total: int, last: int, records: list[Any]) -> bytes:
    data = {
        "current_page": page,
        "total": total,
        "last_page": last,
        "per_page": per_page,
        "data": records,
    }
    return json.dumps({"success": True, "message": "ok", "data": data}).encode()


A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"


def _wrong_type_on_a_later_page() -> dict[tuple[str, int], bytes]:
    return {
        (A, 1): _body(1, 2, 3, 2, [_session(1, A), _session(2, A)]),
        (A, 2): _body(2, 2, 3, 2, [_session(3, A, task_uuids=U1)]),  # task_uuids as a string
        (B, 1): _body(1, 2, 1, 1, [_session(4, B)]),
    }


def test_http_wrong_type_on_a_later_page_names_conversation_page_and_field():
    with (
        _CannedServer(_wrong_type_on_a_later_page()) as server,
        server.client() as client,
        pytest.raises(mf.ResponseFormatError) as caught,
    ):
        client.sessions([A, B], per_page=2)
    assert (caught.value.conversation, caught.value.page) == (A, 2)
    assert caught.value.field == "task_uuids"
    assert "task_uuids" in str(caught.value) and A in str(caught.value)


@pytest.mark.parametrize("on_error", ["warn", "skip"])
def test_http_malformed_later_page_is_left_out_under_warn_and_skip(on_error):
    with (
        _CannedServer(_wrong_type_on_a_later_page()) as server,
        server.client() as client,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)
        df = client.sessions([A, B], per_page=2, on_error=on_error)
    assert list(df["uuid"]) == [str(uuidlib.UUID(int=4))]
    [error] = df.attrs["mihu_frames"]["errors"]
    assert (error["conversation"], error["page"], error["error"]) == (A, 2, "ResponseFormatError")


def test_http_duplicate_uuid_across_pages_keeps_the_latest_version():
    newer = _session(2, A, updated_at="2026-01-03T00:00:00+01:00", summary="newer")
    pages = {
        (A, 1): _body(1, 2, 4, 2, [_session(1, A), _session(2, A, summary="older")]),
        (A, 2): _body(2, 2, 4, 2, [newer, _session(3, A)]),
    }
    with _CannedServer(pages) as server, server.client() as client:
        df = client.sessions(A, per_page=2)
    assert list(df["uuid"]) == [str(uuidlib.UUID(int=n)) for n in (1, 2, 3)]
    assert df.set_index("uuid").loc[str(uuidlib.UUID(int=2)), "summary"] == "newer"


def test_http_last_page_below_current_page_keeps_every_row():
    pages = {
        (A, 1): _body(1, 2, 4, 2, [_session(1, A), _session(2, A)]),
        (A, 2): _body(2, 2, 4, 1, [_session(3, A), _session(4, A)]),  # says last_page 1
    }
    with _CannedServer(pages) as server, server.client() as client:
        try:
            df = client.sessions(A, per_page=2)
        except mf.ResponseFormatError as error:
            assert error.field in PAGINATOR and (error.conversation, error.page) == (A, 2)
            return
    assert list(df["uuid"]) == [str(uuidlib.UUID(int=n)) for n in (1, 2, 3, 4)]


@pytest.mark.parametrize(
    ("total", "last"),
    [pytest.param(5, 1, id="total-5-last-page-1"), pytest.param(3, 1, id="total-3-two-rows")],
)
def test_http_total_that_disagrees_is_not_a_silent_truncation(total, last):
    rows = [_session(1, A), _session(2, A)]
    pages = {(A, 1): _body(1, 2, total, last, rows), (A, 2): _body(2, 2, total, 3, [])}
    with _CannedServer(pages) as server, server.client() as client:
        try:
            df = client.sessions(A, per_page=2)
        except mf.ResponseFormatError as error:
            assert error.field in PAGINATOR | {"data.data"} and error.conversation == A
            return
    assert len(df) == total, f"the server said {total} sessions; the frame has {len(df)}"


def test_http_date_like_undocumented_field_loads():
    pages = {(A, 1): _body(1, 2, 1, 1, [_session(1, A, closed_at="2026-01-02T00:00:00Z")])}
    with _CannedServer(pages) as server, server.client() as client:
        df = client.sessions(A, per_page=2)
    assert json.loads(df.loc[0, "extra"]) == {"closed_at": "2026-01-02T00:00:00Z"}


def test_http_null_body_is_a_format_error_in_a_subprocess():
    code = f"""
    import json, sys
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from test_properties import _CannedServer, A
    import mihu_frames as mf
    with _CannedServer({{(A, 1): b"null"}}) as server, server.client() as client:
        try:
            client.sessions(A)
        except mf.ResponseFormatError as exc:
            print("RFE", exc.conversation, exc.page)
    """
    done = _run_isolated(code)
    assert done.returncode == 0, f"the interpreter died: exit {done.returncode}"
    assert done.stdout.split() == ["RFE", A, "1"]


def test_simulator_bad_envelopes_are_reported_per_conversation():
    with (
        Simulator(seed=5, sizes=[30, 30], retry_after=0) as sim,
        mf.MihuClient(sim.base_url, token=sim.token, cache=None) as client,
    ):
        bad, good = sim.conversation_uuids
        for _ in range(3):  # the simulator cycles through three bad envelopes
            sim.fail_next("bad_envelope", conversation=bad, page=2)
            with pytest.warns(RuntimeWarning, match=bad):
                df = client.sessions([bad, good], per_page=10, on_error="warn")
            [error] = df.attrs["mihu_frames"]["errors"]
            assert (error["conversation"], error["page"]) == (bad, 2)
            assert error["error"] == "ResponseFormatError"
            assert set(df["conversation_uuid"]) == {good} and len(df) == 30
