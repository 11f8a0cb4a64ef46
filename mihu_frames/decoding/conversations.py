"""Pages of the account's conversations listing (``GET /api/v1/conversations``) to Arrow.

The listing is not in the API's documentation; a real public client of it reads the same
Laravel envelope as the sessions endpoint. So the envelope and its paginator are checked as
for sessions (:mod:`~mihu_frames.decoding.envelope`), and each conversation is taken as
tolerantly as it can be without losing anything:

- ``uuid`` must be a canonical UUID: an entry without one is a
  :class:`~mihu_frames.errors.ResponseFormatError` naming the page and the entry (a load of
  "every conversation" cannot go on with a conversation it cannot name);
- the fields a real client reads are typed (:data:`~mihu_frames.schema.CONVERSATIONS_SCHEMA`);
  a value of another type is an error naming the field;
- every other field named ``*_at`` whose values are ISO 8601 text (or null) becomes a
  timestamp column of its own; anything else is kept as JSON in ``extra``, exactly as for
  sessions (undocumented values nested deeper than 64 levels are refused);
- a timestamp outside years 1-9999 once its offset is applied is null, its text kept in
  ``extra`` and counted.

Listing pages are small (at most 100 conversations), so they are read with ``json.loads``, which
refuses deep nesting with an exception rather than crashing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from mihu_frames.decoding.envelope import (
    FieldError,
    PageEnvelope,
    PageInfo,
    format_error,
    parse_envelope,
)
from mihu_frames.decoding.extra import CONTACT_KEYS, JSON
from mihu_frames.decoding.nesting import MAX_EXTRA_DEPTH, value_depth
from mihu_frames.decoding.timestamps import parse_timestamps, utc
from mihu_frames.errors import ResponseFormatError
from mihu_frames.frame import ORDER_COLUMNS, with_order
from mihu_frames.schema import (
    CONTACT_FIELDS,
    CONVERSATION_FIELDS,
    CONVERSATION_STRING_FIELDS,
    CONVERSATION_TIMESTAMP_FIELDS,
    CONVERSATIONS_SCHEMA,
    TIMESTAMP_TYPE,
    UUID_RE,
)

_KNOWN = frozenset(CONVERSATION_FIELDS)
#: Columns this library adds: a server field of the same name is kept in ``extra``.
_RESERVED = frozenset(("extra", "fetched_at"))
#: Makes the error of one field of one conversation: ``fail(field, detail)``.
Fail = Callable[[str, str], ResponseFormatError]


def decode_conversation_pages(
    bodies: Sequence[bytes], infos: Sequence[PageInfo], *, use_threads: bool = False
) -> tuple[pa.Table, list[PageEnvelope]]:
    """Decode listing pages into one table: ``CONVERSATIONS_SCHEMA``, any other ``*_at``
    columns, and the hidden order columns.

    Raises
    ------
    ResponseFormatError
        A body is not the envelope, or an entry has no valid ``uuid`` or a field of the wrong
        type; it names the page (and the entry and field).
    """
    del use_threads  # small pages: json.loads page by page
    tables, envelopes = [], []
    for body, info in zip(bodies, infos, strict=True):
        table, envelope = _decode_page(body, info)
        tables.append(table)
        envelopes.append(envelope)
    if not tables:
        return _ordered(with_order(CONVERSATIONS_SCHEMA.empty_table(), [], [], [])), []
    return _ordered(pa.concat_tables(tables, promote_options="default")), envelopes


def _decode_page(body: bytes, info: PageInfo) -> tuple[pa.Table, PageEnvelope]:
    try:
        payload = json.loads(body)
    except RecursionError:
        raise format_error(info, None, "body nests too deeply to be a page") from None
    except ValueError as exc:  # UnicodeDecodeError too
        snippet = body[:80].decode("utf-8", "replace")
        raise format_error(info, None, f"body is not JSON ({exc}); it starts {snippet!r}") from None
    envelope, records = parse_envelope(payload, info)
    columns: dict[str, list[Any]] = {name: [] for name in _ROW_KEYS}
    stamps: dict[str, list[Any]] = {name: [] for name in CONVERSATION_TIMESTAMP_FIELDS}
    extras: list[dict[str, Any]] = []
    for row, record in enumerate(records):
        _take(record, row, info, columns, stamps, extras)
    n = len(records)
    for name in stamps:  # other *_at fields seen on this page: null where a row lacks one
        stamps[name] += [None] * (n - len(stamps[name]))
    arrays: dict[str, pa.Array] = {
        "uuid": pa.array(columns["uuid"], pa.string()),
        **{name: pa.array(columns[name], pa.string()) for name in CONVERSATION_STRING_FIELDS},
        **{
            f"contact_{name}": pa.array(columns[f"contact_{name}"], pa.string())
            for name in CONTACT_FIELDS
        },
    }
    lost = 0
    for name, values in stamps.items():
        documented = name in CONVERSATION_TIMESTAMP_FIELDS
        try:
            parsed, outside = parse_timestamps(pa.array(values, pa.string()), name)
        except FieldError as exc:
            if documented:
                raise format_error(info, name, f"conversation {exc.row}: {exc.detail}") from None
            parsed, outside = _parse_or_keep(values, name, extras)
        arrays[name] = parsed
        if outside is not None:
            for i in np.flatnonzero(outside):
                extras[i][name] = values[i]
            lost += int(outside.sum())
    arrays["sessions_count"] = pa.array(columns["sessions_count"], pa.int64())
    arrays["extra"] = pa.array([JSON.encode(e) if e else None for e in extras], pa.string())
    arrays["fetched_at"] = pa.array([utc(info.fetched_at)] * n, TIMESTAMP_TYPE)
    table = pa.table(arrays)
    table = with_order(table, [info.query] * n, [info.page] * n, list(range(n)))
    return table, replace(envelope, out_of_range=lost)


_ROW_KEYS = (
    "uuid",
    *CONVERSATION_STRING_FIELDS,
    *[f"contact_{name}" for name in CONTACT_FIELDS],
    "sessions_count",
)


def _take(
    record: Any,
    row: int,
    info: PageInfo,
    columns: dict[str, list[Any]],
    stamps: dict[str, list[Any]],
    extras: list[dict[str, Any]],
) -> None:
    """Append one conversation's values to the page's columns."""

    def fail(field: str, detail: str) -> ResponseFormatError:
        return format_error(info, field, f"conversation {row}: {detail}")

    if not isinstance(record, dict):
        raise fail("data.data", f"expected an object, got {type(record).__name__}")
    contact = _take_typed(record, columns, fail)
    extra = _take_the_rest(record, row, stamps, fail)
    others = {k: v for k, v in contact.items() if k not in CONTACT_KEYS}
    if others:
        extra["contact"] = others
    for name, value in extra.items():
        if value_depth(value) > MAX_EXTRA_DEPTH:
            raise fail("extra", f"undocumented field {name!r:.40} nests too deeply")
    extras.append(extra)


def _take_typed(
    record: dict[str, Any], columns: dict[str, list[Any]], fail: Fail
) -> dict[str, Any]:
    """Append the typed fields' values (all but the timestamps); return the contact (``{}``
    for null)."""
    uuid = record.get("uuid")
    if not isinstance(uuid, str) or not UUID_RE.fullmatch(uuid):
        raise fail("uuid", f"'uuid' is not a conversation UUID: {uuid!r:.60}")
    columns["uuid"].append(uuid.lower())
    for name in CONVERSATION_STRING_FIELDS:
        columns[name].append(_text(record.get(name), name, fail))
    contact = record.get("contact")
    if contact is not None and not isinstance(contact, dict):
        raise fail("contact", f"expected an object or null, got {contact!r:.60}")
    contact = contact or {}
    for name in CONTACT_FIELDS:
        columns[f"contact_{name}"].append(_text(contact.get(name), f"contact.{name}", fail))
    count = record.get("sessions_count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        raise fail("sessions_count", f"expected an integer, got {count!r:.60}")
    columns["sessions_count"].append(count)
    return contact


def _take_the_rest(
    record: dict[str, Any], row: int, stamps: dict[str, list[Any]], fail: Fail
) -> dict[str, Any]:
    """Append the timestamps' texts (documented, and other ``*_at`` fields holding text or
    null); return the remaining undocumented fields, for ``extra``."""
    extra: dict[str, Any] = {}
    for name, value in record.items():
        if name in _KNOWN:
            if name in CONVERSATION_TIMESTAMP_FIELDS:
                stamps[name].append(_text(value, name, fail))
        elif (
            name.endswith("_at")
            and name not in _RESERVED
            and (value is None or isinstance(value, str))
        ):
            stamps.setdefault(name, [None] * row).append(value)
        else:
            extra[name] = value
    for values in stamps.values():  # a field this row lacks
        if len(values) == row:
            values.append(None)
    return extra


def _parse_or_keep(
    values: list[Any], name: str, extras: list[dict[str, Any]]
) -> tuple[pa.Array, np.ndarray | None]:
    """An undocumented ``*_at`` field with text that is not ISO 8601: those values go to
    ``extra`` as sent, the others are parsed."""
    kept: list[Any] = []
    for i, value in enumerate(values):
        try:
            parse_timestamps(pa.array([value], pa.string()), name)
        except FieldError:
            extras[i][name] = value
            value = None
        kept.append(value)
    return parse_timestamps(pa.array(kept, pa.string()), name)


def _text(value: Any, field: str, fail: Fail) -> str | None:
    if value is not None and not isinstance(value, str):
        raise fail(field, f"expected a string, got {value!r:.60}")
    return value


def _ordered(table: pa.Table) -> pa.Table:
    """Known columns first, then other ``*_at`` columns by name, then extra and fetch time."""
    known = [n for n in CONVERSATIONS_SCHEMA.names if n not in ("extra", "fetched_at")]
    others = sorted(n for n in table.column_names if n not in known and n.endswith("_at"))
    others = [n for n in others if n != "fetched_at"]
    return table.select([*known, *others, "extra", "fetched_at", *ORDER_COLUMNS])


def union_listings(tables: Sequence[pa.Table]) -> pa.Table:
    """Several listings (one per filter value) as one table: every conversation once, where
    it first appears (listing order, then page order), columns ordered as one listing's.

    A ``*_at`` column one listing has and another lacks is null where it is missing; a
    column typed differently in two listings is promoted as ``pa.concat_tables`` does.
    """
    if len(tables) == 1:
        return tables[0]
    table = pa.concat_tables(tables, promote_options="default")
    uuids = table.column("uuid").to_numpy(zero_copy_only=False)
    _, first = np.unique(uuids, return_index=True)
    table = table.take(pa.array(np.sort(first), type=pa.int64()))
    known = [n for n in CONVERSATIONS_SCHEMA.names if n not in ("extra", "fetched_at")]
    others = sorted(n for n in table.column_names if n not in (*known, "extra", "fetched_at"))
    return table.select([*known, *others, "extra", "fetched_at"])
