"""From API bytes or session dicts to the sessions frame, column-wise through Arrow.

Two entry points share one column builder:

- :func:`decode_pages` turns a batch of raw page bodies into an Arrow table with pyarrow's JSON
  reader and the explicit envelope schema: no Python object per session. When the reader cannot
  take a batch (a wrong type, garbage), each page is decoded with :mod:`json` instead, so the
  error can name the page, the field and the value.
- :func:`sessions_frame` takes session dicts a user already holds.

Fields the documentation does not list are kept as JSON in ``extra``, exactly as sent: a page
whose inferred Arrow values may say less than its text is read again with :mod:`json` for
``extra`` (:func:`_fast_extra`). Nothing here knows HTTP.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise, repeat
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from mihu_frames.errors import ResponseFormatError
from mihu_frames.schema import (
    API_PAGE_SCHEMA,
    API_SESSION_TYPE,
    CONTACT_FIELDS,
    CONTACT_TYPE,
    SESSIONS_SCHEMA,
    STATUS_VALUES,
    STRING_FIELDS,
    TIMESTAMP_FIELDS,
    TYPE_VALUES,
    empty_table,
    to_pandas,
)

_TS = pa.timestamp("us", tz="UTC")
_LIST = pa.list_(pa.string())
_ENVELOPE_INTS = ("current_page", "total", "last_page", "per_page")
_FAST_BODY = re.compile(rb"\A[ \t\r]*\{")
#: Nesting deeper than this in undocumented fields is refused (and kept out of pyarrow).
MAX_EXTRA_DEPTH = 64
#: Hidden columns that keep the frame in fetch order after concurrent fetching.
ORDER_COLUMNS = ("_query", "_page", "_row")

logger = logging.getLogger("mihu_frames")


@dataclass(frozen=True)
class PageInfo:
    """What is known about one page before its body is read."""

    conversation: str
    page: int
    query: int = 0
    status: str | None = None
    type: str | None = None
    fetched_at: datetime | None = None


@dataclass(frozen=True)
class PageEnvelope:
    """The paginator fields of one decoded page."""

    current_page: int
    last_page: int
    total: int
    per_page: int
    rows: int


class _FieldError(Exception):
    """A bad value at a known session row; the caller turns it into ResponseFormatError."""

    def __init__(self, field: str, row: int, detail: str) -> None:
        super().__init__(detail)
        self.field, self.row, self.detail = field, row, detail


# --------------------------------------------------------------------------- page decoding


def decode_pages(
    bodies: Sequence[bytes], infos: Sequence[PageInfo], *, use_threads: bool = True
) -> tuple[pa.Table, list[PageEnvelope]]:
    """Decode a batch of page bodies into one Arrow table in the frame schema.

    Parameters
    ----------
    bodies : sequence of bytes
        Raw response bodies, one per page.
    infos : sequence of PageInfo
        The request behind each body (conversation, page, filter tags, fetch time).
    use_threads : bool
        Let pyarrow parse blocks of a large batch in parallel (worth it when the cores are not
        busy fetching).

    Returns
    -------
    table : pyarrow.Table
        ``SESSIONS_SCHEMA`` plus the hidden ``ORDER_COLUMNS``.
    envelopes : list of PageEnvelope
        The paginator fields of each page, in input order.

    Raises
    ------
    ResponseFormatError
        A body is not the documented envelope, or a session field has an impossible value;
        the error names the conversation, the page and the field.
    """
    if not bodies:
        return _with_order(empty_table(), [], [], []), []
    pages = None
    # The reader takes one page per line, so a body with a raw newline (pretty-printed, or a
    # newline inside a string, which JSON forbids) goes to json.loads; so does anything that
    # is not an object: pyarrow's reader crashes the process on a bare ``null``.
    if all(_FAST_BODY.match(b) and b"\n" not in b for b in bodies):
        try:
            pages = _read_envelopes(bodies, use_threads)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
            pages = None
    if pages is not None and pages.num_rows == len(bodies) and _fast_path_safe(pages):
        data = pages.column("data").combine_chunks()
        envelopes = _check_envelopes(pages, data, infos)
        lists = data.field("data")
        sessions = pc.list_flatten(lists)
        parents = pc.list_parent_indices(lists).to_numpy()
        offsets = lists.offsets.to_numpy()
        rows = np.arange(len(parents)) - offsets[parents]
        try:
            extra = _fast_extra(sessions, parents, bodies)
            return _build_batch(sessions, parents, rows, infos, extra), envelopes
        except (_FieldError, _NotExact):
            pass  # decode page by page below, so the error names its page
    # The fast reader refused the batch: decode page by page to find and name the problem.
    tables, envelopes = [], []
    for body, info in zip(bodies, infos, strict=True):
        table, envelope = _decode_page_slowly(body, info)
        tables.append(table)
        envelopes.append(envelope)
    return pa.concat_tables(tables), envelopes


#: Types the reader may infer for undocumented fields and still write back as JSON values.
_PLAIN = (pa.types.is_string, pa.types.is_boolean, pa.types.is_int64, pa.types.is_float64)


def _plain_type(type_: pa.DataType, depth: int = 1) -> bool:
    if depth > MAX_EXTRA_DEPTH:
        return False
    if pa.types.is_struct(type_):
        return all(_plain_type(f.type, depth + 1) for f in type_)
    if pa.types.is_list(type_):
        return _plain_type(type_.value_type, depth + 1)
    return pa.types.is_null(type_) or any(ok(type_) for ok in _PLAIN)


def _fast_path_safe(pages: pa.Table) -> bool:
    """Whether the reader's table says what the bodies said.

    The reader does not check UTF-8, and for undocumented fields it infers types: a date-like
    string becomes a timestamp. Such batches, and undocumented values nested deeper than
    ``MAX_EXTRA_DEPTH``, go through ``json.loads`` instead. (Where the inferred values of the
    plain types say less than the text, :func:`_fast_extra` re-reads those pages.)
    """
    try:
        pages.validate(full=True)
    except pa.ArrowInvalid:
        return False
    session = pages.schema.field("data").type.field("data").type.value_type
    for field in session:
        if field.name in API_SESSION_TYPE.names and field.name != "contact":
            continue
        if field.name == "contact":
            extra = [f for f in field.type if f.name not in CONTACT_FIELDS]
        else:
            extra = [field]
        if not all(_plain_type(f.type) for f in extra):
            return False
    return True


def _read_envelopes(lines: Sequence[bytes], use_threads: bool) -> pa.Table:
    block = max(1 << 20, max(len(b) for b in lines) + 2)
    return pa_json.read_json(
        pa.BufferReader(b"\n".join(lines)),
        read_options=pa_json.ReadOptions(
            use_threads=use_threads and len(lines) > 4, block_size=block
        ),
        parse_options=pa_json.ParseOptions(
            explicit_schema=API_PAGE_SCHEMA, unexpected_field_behavior="infer"
        ),
    )


_HINT = {
    name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*(\d{1,12})\s*[,}]')
    for name in ("last_page", "total", "per_page")
}


def paginator_hint(body: bytes) -> int | None:
    """``last_page`` of a page body, read without decoding it; None when not plain.

    A first page's hint lets its later pages be requested while it waits to be decoded. The
    decode stays the truth (it checks the envelope and grows the load if ``last_page`` is
    larger), so a wrong hint can cost requests or time, never rows. The envelope's fields are
    the last of their names in the body (the paginator follows ``data``); the hint is only
    taken when ``total`` and ``per_page`` agree with it, as the decode will demand.
    """
    found = {}
    for name, pattern in _HINT.items():
        at = body.rfind(b'"' + name.encode() + b'"')
        match = pattern.match(body, at) if at >= 0 else None
        if match is None:
            return None
        found[name] = int(match.group(1))
    last_page, total, per_page = found["last_page"], found["total"], found["per_page"]
    if per_page < 1 or last_page != max(1, math.ceil(total / per_page)):
        return None
    return last_page


def _check_envelopes(
    pages: pa.Table, data: pa.StructArray, infos: Sequence[PageInfo]
) -> list[PageEnvelope]:
    success = pages.column("success").combine_chunks()
    columns = {name: data.field(name) for name in _ENVELOPE_INTS}
    checks = [("success", pc.fill_null(success, False)), ("data", data.is_valid())]
    checks += [(f"data.{n}", col.is_valid()) for n, col in columns.items()]
    checks.append(("data.data", data.field("data").is_valid()))
    for field, ok in checks:
        ok = pc.and_(ok, data.is_valid()) if field != "success" else ok
        if not pc.all(pc.fill_null(ok, False)).as_py():
            bad = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
            raise _format_error(infos[bad], field, _missing_detail(field, pages, bad))
    values = {n: c.to_numpy() for n, c in columns.items()}
    counts = pc.list_value_length(data.field("data")).to_numpy()
    envelopes = []
    for i, info in enumerate(infos):
        envelope = PageEnvelope(
            current_page=int(values["current_page"][i]),
            last_page=int(values["last_page"][i]),
            total=int(values["total"][i]),
            per_page=int(values["per_page"][i]),
            rows=int(counts[i]),
        )
        _check_paginator(envelope, info)
        envelopes.append(envelope)
    return envelopes


def _missing_detail(field: str, pages: pa.Table, row: int) -> str:
    if field == "success":
        message = pages.column("message")[row].as_py()
        return f"'success' is not true (message: {message!r})"
    return f"'{field}' is missing or null"


def _check_paginator(envelope: PageEnvelope, info: PageInfo) -> None:
    if envelope.current_page != info.page:
        raise _format_error(
            info, "data.current_page", f"asked for page {info.page}, got {envelope.current_page}"
        )
    if envelope.last_page < 1 or envelope.per_page < 1 or envelope.total < 0:
        raise _format_error(
            info,
            "data.last_page",
            f"impossible paginator (last_page={envelope.last_page}, "
            f"per_page={envelope.per_page}, total={envelope.total})",
        )
    if envelope.rows > envelope.per_page:
        raise _format_error(
            info, "data.data", f"{envelope.rows} sessions on a page of {envelope.per_page}"
        )
    # total and last_page come from one count, so they must agree; trusting a short
    # last_page would silently drop the sessions beyond it. (Rows on the last page may differ
    # from what total implies: the count and the page are separate queries while data moves.)
    pages = max(1, math.ceil(envelope.total / envelope.per_page))
    if envelope.last_page != pages:
        raise _format_error(
            info,
            "data.last_page",
            f"last_page={envelope.last_page} disagrees with total={envelope.total} "
            f"at per_page={envelope.per_page} ({pages} pages)",
        )


def _decode_page_slowly(body: bytes, info: PageInfo) -> tuple[pa.Table, PageEnvelope]:
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        _raise_bad_text(json.loads(body.decode("utf-8", "replace")), info)
        raise  # pragma: no cover - _raise_bad_text always raises
    except (ValueError, RecursionError) as exc:
        snippet = body[:80].decode("utf-8", "replace")
        raise _format_error(
            info, None, f"body is not JSON ({exc}); it starts {snippet!r}"
        ) from None
    envelope, records = parse_envelope(payload, info)
    try:
        sessions, extra = _records_to_struct(records)
        rows = np.arange(len(records))
        parents = np.zeros(len(records), dtype=np.int64)
        table = _build_batch(sessions, parents, rows, [info], extra)
    except _FieldError as exc:
        raise _format_error(info, exc.field, f"session {exc.row}: {exc.detail}") from None
    return table, envelope


def parse_envelope(payload: Any, info: PageInfo) -> tuple[PageEnvelope, list[Any]]:
    """Check a decoded JSON body against the documented envelope.

    Returns the paginator fields and the list of session records; raises
    :class:`ResponseFormatError` naming the first field that is wrong.
    """
    if not isinstance(payload, Mapping):
        raise _format_error(info, None, f"body is a JSON {type(payload).__name__}, not an object")
    if payload.get("success") is not True:
        detail = f"'success' is not true (message: {payload.get('message')!r})"
        raise _format_error(info, "success", detail)
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise _format_error(info, "data", "'data' is missing or not an object")
    values = {}
    for name in _ENVELOPE_INTS:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _format_error(info, f"data.{name}", f"expected an integer, got {value!r}")
        values[name] = value
    records = data.get("data")
    if not isinstance(records, list):
        raise _format_error(info, "data.data", f"expected a list, got {type(records).__name__}")
    envelope = PageEnvelope(**values, rows=len(records))
    _check_paginator(envelope, info)
    return envelope, records


def _format_error(info: PageInfo, field: str | None, detail: str) -> ResponseFormatError:
    where = f"field '{field}': " if field else ""
    return ResponseFormatError(
        f"response is not the documented format: {where}{detail}",
        field=field,
        conversation=info.conversation,
        page=info.page,
    )


# --------------------------------------------------------------------------- records


_KNOWN_KEYS = frozenset(API_SESSION_TYPE.names)
_CONTACT_KEYS = frozenset(CONTACT_FIELDS)


def _records_to_struct(records: Sequence[Any]) -> tuple[pa.StructArray, pa.Array | None]:
    """Session dicts to a struct array of the API's types, and undocumented keys as JSON.

    pyarrow converts the dicts in one C++ pass and ignores keys outside the type; those keys
    are found with key-view comparisons (C-level too) and only the rare records that have
    them are visited in Python.
    """
    if not all(type(r) is dict for r in records):
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise _FieldError(
                    "data.data", i, f"expected an object, got {type(record).__name__}"
                )
        records = [dict(r) for r in records]
    # pyarrow would read a string as a list of its characters: refuse it first.
    tasks = map(dict.get, records, repeat("task_uuids"))
    for i, value in enumerate(tasks):
        if value is not None and value.__class__ is not list and not isinstance(value, tuple):
            raise _FieldError("task_uuids", i, f"expected a list of strings, got {value!r:.80}")
    try:
        known = pa.array(records, type=API_SESSION_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        _find_bad_value(records)
        raise
    except UnicodeError:  # a lone surrogate from a "\ud800" escape
        row, name = _find_bad_text(records, lambda text: not _encodes(text))
        raise _FieldError(name, row, "a string is not valid Unicode") from None
    odd = {i for i, r in enumerate(records) if not r.keys() <= _KNOWN_KEYS}
    odd.update(
        i
        for i, c in enumerate(map(dict.get, records, repeat("contact")))
        if c.__class__ is dict and not c.keys() <= _CONTACT_KEYS
    )
    if not odd:
        return known, None
    extras: list[str | None] = [None] * len(records)
    for i in odd:
        extras[i] = _extra_of(records[i], i)
    return known, pa.array(extras, type=pa.string())


_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def _extra_of(record: dict[str, Any], row: int) -> str | None:
    extra = {k: record[k] for k in record.keys() - _KNOWN_KEYS}
    contact = record.get("contact")
    if contact.__class__ is dict:
        nested = {k: contact[k] for k in contact.keys() - _CONTACT_KEYS}
        if nested:
            extra["contact"] = nested
    if not extra:
        return None
    if _depth(extra) > MAX_EXTRA_DEPTH:
        raise _FieldError("extra", row, f"undocumented fields nest deeper than {MAX_EXTRA_DEPTH}")
    try:
        return _JSON.encode(extra)
    except (TypeError, ValueError, UnicodeError) as exc:  # values sessions_frame was handed
        raise _FieldError("extra", row, f"undocumented fields are not JSON: {exc}") from None


def _depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_EXTRA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in item)
    return deepest


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeError:
        return False
    return True


def _find_bad_text(records: Sequence[Any], bad: Any) -> tuple[int, str]:
    """The (row, field) of the first string in the sessions for which ``bad(text)`` holds."""
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            continue
        for name, value in record.items():
            values = value.items() if isinstance(value, Mapping) else [(None, value)]
            for key, item in values:
                if isinstance(item, str) and bad(item):
                    return row, name if key is None else f"{name}.{key}"
    return 0, "data.data"


def _raise_bad_text(payload: Any, info: PageInfo) -> None:
    """Name the field whose bytes were not UTF-8 (found as U+FFFD after a lenient decode)."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    records = data.get("data") if isinstance(data, Mapping) else None
    row, name = _find_bad_text(
        records if isinstance(records, list) else [], lambda t: "\ufffd" in t
    )
    raise _format_error(info, name, f"session {row}: '{name}' is not valid UTF-8")


def _find_bad_value(records: Sequence[Mapping[str, Any]]) -> None:
    """Raise a _FieldError for the first value that does not fit the documented type."""
    for i, record in enumerate(records):
        for name in API_SESSION_TYPE.names:
            value = record.get(name)
            if value is None:
                continue
            if name == "contact":
                if not isinstance(value, Mapping):
                    raise _FieldError(name, i, f"expected an object or null, got {value!r:.80}")
                for key in CONTACT_FIELDS:
                    if value.get(key) is not None and not isinstance(value.get(key), str):
                        got = f"{value.get(key)!r:.80}"
                        raise _FieldError(f"contact.{key}", i, f"expected a string, got {got}")
            elif name == "task_uuids":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise _FieldError(name, i, f"expected a list of strings, got {value!r:.80}")
            elif not isinstance(value, str):
                raise _FieldError(name, i, f"expected a string, got {value!r:.80}")


# --------------------------------------------------------------------------- columns


def _build_batch(
    sessions: pa.StructArray,
    parents: np.ndarray,
    rows: np.ndarray,
    infos: Sequence[PageInfo],
    extra: pa.Array | None = None,
) -> pa.Table:
    """Sessions of API types, each with the index of its page in ``infos``, to frame columns."""
    parents_arr = pa.array(parents, type=pa.int64())

    def per_page(values: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(values, type=type_).take(parents_arr)

    table = build_columns(
        sessions,
        conversation=per_page([i.conversation for i in infos], pa.string()),
        status=per_page([i.status for i in infos], pa.string()),
        type_=per_page([i.type for i in infos], pa.string()),
        fetched_at=per_page([_utc(i.fetched_at) for i in infos], _TS),
        extra=extra,
    )
    return _with_order(
        table,
        per_page([i.query for i in infos], pa.int64()),
        per_page([i.page for i in infos], pa.int64()),
        pa.array(rows, type=pa.int64()),
    )


def _with_order(table: pa.Table, query: Any, page: Any, row: Any) -> pa.Table:
    for name, values in zip(ORDER_COLUMNS, (query, page, row), strict=True):
        table = table.append_column(name, pa.array(values, type=pa.int64()))
    return table


def build_columns(
    sessions: pa.StructArray,
    *,
    conversation: pa.Array,
    status: pa.Array,
    type_: pa.Array,
    fetched_at: pa.Array,
    extra: pa.Array | None = None,
) -> pa.Table:
    """Flatten, parse and derive every frame column from a struct array of API sessions.

    ``extra`` is the JSON of the undocumented fields, built by the caller (from dicts, or by
    :func:`_fast_extra`); None when the sessions have none.
    Raises ``_FieldError`` for a timestamp that is not ISO 8601.
    """
    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    n = len(sessions)
    field_names = set(sessions.type.names) if n or sessions.type.num_fields else set()

    def field(name: str, type_: pa.DataType) -> pa.Array:
        if name not in field_names:
            return pa.nulls(n, type=type_)
        values = sessions.field(name)
        return values if values.type == type_ else values.cast(type_)

    times = {name: parse_timestamps(_raw(sessions, name, n), name) for name in TIMESTAMP_FIELDS}
    started, ended = times["started_at"], times["ended_at"]
    contact = field("contact", CONTACT_TYPE)
    contact_values = _struct_children(contact, CONTACT_FIELDS)
    tasks = pc.fill_null(field("task_uuids", _LIST), pa.scalar([], type=_LIST))
    columns: dict[str, pa.Array] = {
        "conversation_uuid": pc.coalesce(field("conversation_uuid", pa.string()), conversation),
        "uuid": field("uuid", pa.string()),
        "status": status,
        "type": type_,
        **times,
        "duration": pc.subtract(ended, started),
        "time_to_evaluation": pc.subtract(times["evaluated_at"], ended),
        "time_to_summary": pc.subtract(times["summary_generated_at"], ended),
        "idle_before_end": pc.subtract(ended, times["last_activity_at"]),
        "is_open": pc.is_null(ended),
        **{name: field(name, pa.string()) for name in STRING_FIELDS},
        **{f"contact_{name}": contact_values[name] for name in CONTACT_FIELDS},
        "task_uuids": tasks,
        "task_count": pc.list_value_length(tasks).cast(pa.int64()),
        "extra": extra if extra is not None else pa.nulls(n, pa.string()),
        "fetched_at": fetched_at,
    }
    uuids = columns["uuid"]
    if uuids.null_count:
        row = int(np.flatnonzero(uuids.is_null().to_numpy(zero_copy_only=False))[0])
        raise _FieldError("uuid", row, "a session has no uuid")
    return pa.Table.from_arrays([columns[f.name] for f in SESSIONS_SCHEMA], schema=SESSIONS_SCHEMA)


def _raw(sessions: pa.StructArray, name: str, n: int) -> pa.Array:
    names = sessions.type.names if n or sessions.type.num_fields else []
    return sessions.field(name) if name in names else pa.nulls(n, pa.string())


def _struct_children(struct: pa.StructArray, names: Iterable[str]) -> dict[str, pa.Array]:
    present = {struct.type.field(i).name: i for i in range(struct.type.num_fields)}
    flat = struct.flatten()  # children with the parent's nulls applied
    return {
        name: flat[present[name]].cast(pa.string())
        if name in present
        else pa.nulls(len(struct), pa.string())
        for name in names
    }


class _NotExact(Exception):
    """``json.loads`` of a page does not agree with the reader's table of it."""


def _fast_extra(sessions: pa.StructArray, parents: np.ndarray, bodies: Sequence[bytes]) -> pa.Array:
    """The ``extra`` column of a batch read by pyarrow: the text the records path writes.

    For undocumented fields the reader's values say less than the JSON in two ways: a null
    object member may have been sent as ``null`` or left out, and a double may have been sent
    as an integer (``1`` among ``0.5``, or an integer beyond int64).
    :func:`_pages_to_reread` finds every page where either may have happened; their sessions'
    ``extra`` comes from ``json.loads`` of the body, as in the records path. On every other
    page a null member was left out and every double was written with a fraction, so the
    Arrow values without their null members are the JSON that was sent.

    Parameters
    ----------
    sessions : pyarrow.StructArray
        The sessions of the batch, in page order, with the reader's inferred fields.
    parents : numpy.ndarray
        The index in ``bodies`` of each session's page.
    bodies : sequence of bytes
        The page bodies the reader read.

    Returns
    -------
    pyarrow.StringArray
        JSON text of each session's undocumented fields, null where there are none.

    Raises
    ------
    _NotExact
        ``json.loads`` of a page disagrees with the reader (decode page by page instead).
    _FieldError
        Undocumented fields of a re-read page nest deeper than ``MAX_EXTRA_DEPTH``.
    """
    n = len(sessions)
    parts = _extra_parts(sessions)
    if not parts:
        return pa.nulls(n, pa.string())
    reread = _pages_to_reread(parts, parents, bodies)
    out: list[str | None] = [None] * n
    present = np.zeros(n, dtype=bool)
    for values in parts.values():
        present |= values.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(present & ~reread[parents])
    if len(rows):
        index = pa.array(rows)
        taken = {name: values.take(index).to_pylist() for name, values in parts.items()}
        nested = [name for name, values in parts.items() if _has_null_members(values)]
        for j, row in enumerate(rows):
            item = {name: values[j] for name, values in taken.items() if values[j] is not None}
            for name in nested:
                if name in item:
                    item[name] = _without_null_members(item[name])
            out[row] = _JSON.encode(item)
    for page in np.flatnonzero(reread):
        start, stop = (int(i) for i in np.searchsorted(parents, [page, page + 1]))
        if stop > start:
            out[start:stop] = _exact_extras(bodies[page], stop - start)
    try:
        return pa.array(out, type=pa.string())
    except UnicodeError:  # a lone surrogate escape that only json.loads let through
        raise _NotExact from None


def _extra_parts(sessions: pa.StructArray) -> dict[str, pa.Array]:
    """The undocumented values of each session, by field, with the sessions' nulls applied.

    The contact's undocumented members come as one struct under ``"contact"``, null where a
    session has none of them. Null-typed fields are included: their names matter to
    :func:`_pages_to_reread`.
    """
    if not pa.types.is_struct(sessions.type):
        return {}
    names = [field.name for field in sessions.type]
    contact_type = sessions.type.field("contact").type if "contact" in names else None
    contact_extra = []
    if contact_type is not None and pa.types.is_struct(contact_type):
        contact_extra = [i for i, f in enumerate(contact_type) if f.name not in _CONTACT_KEYS]
    if not contact_extra and all(name in _KNOWN_KEYS for name in names):
        return {}
    flat = sessions.flatten()
    parts = {name: flat[i] for i, name in enumerate(names) if name not in _KNOWN_KEYS}
    if contact_extra:
        children = flat[names.index("contact")].flatten()
        arrays = [children[i] for i in contact_extra]
        some = np.zeros(len(sessions), dtype=bool)
        for values in arrays:
            some |= values.is_valid().to_numpy(zero_copy_only=False)
        parts["contact"] = pa.StructArray.from_arrays(
            arrays,
            fields=[contact_type.field(i) for i in contact_extra],
            mask=pa.array(~some),
        )
    return parts


def _pages_to_reread(
    parts: Mapping[str, pa.Array], parents: np.ndarray, bodies: Sequence[bytes]
) -> np.ndarray:
    """Which pages' undocumented values the reader may not have kept exactly.

    Two rules, each a superset of the pages where the rebuilt JSON could differ:

    - a double without a fraction (or infinite) anywhere in an undocumented value: it may
      have been sent as an integer, which ``json.loads`` keeps as an int;
    - the body has ``"name": null`` (with any JSON spelling of ``name`` and any whitespace)
      for a member name anywhere in the undocumented values: it may be an explicit null,
      which the reader does not tell from a member that was left out.

    Every other kind of value the reader keeps exactly (``_fast_path_safe`` lets through only
    strings, booleans, int64, doubles, nulls, lists and objects of them), and a double with a
    fraction can only come from a number written with one.
    """
    integral = np.zeros(len(bodies), dtype=bool)
    for values in parts.values():
        rows = _integral_rows(values)
        if rows is not None:
            integral[parents[rows]] = True
    names = {name for name in parts if name != "contact"}
    for values in parts.values():
        _member_names(values.type, names)
    nulls = _sends_null(bodies, names)
    reread = integral | nulls
    if reread.any():
        logger.debug(
            "re-reading %d of %d pages with json.loads for an exact 'extra': %d hold a double "
            "without a fraction, %d a null member (undocumented names: %d)",
            reread.sum(),
            len(bodies),
            integral.sum(),
            nulls.sum(),
            len(names),
        )
    return reread


def _has_null_members(values: pa.Array) -> bool:
    """Whether an object in ``values``, at any depth, has a null member."""
    if pa.types.is_struct(values.type):
        return any(
            child.null_count > values.null_count or _has_null_members(child)
            for child in values.flatten()  # the parent's nulls applied
        )
    if pa.types.is_list(values.type):
        return _has_null_members(values.flatten())
    return False


def _holds(type_: pa.DataType, kind: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``type_`` or a type nested in it (through structs and lists) is of ``kind``."""
    if kind(type_):
        return True
    if pa.types.is_struct(type_):
        return any(_holds(field.type, kind) for field in type_)
    if pa.types.is_list(type_):
        return _holds(type_.value_type, kind)
    return False


def _member_names(type_: pa.DataType, names: set[str]) -> None:
    """Add the names of every struct member nested in ``type_`` to ``names``."""
    if pa.types.is_struct(type_):
        for field in type_:
            names.add(field.name)
            _member_names(field.type, names)
    elif pa.types.is_list(type_):
        _member_names(type_.value_type, names)


def _integral_rows(values: pa.Array) -> np.ndarray | None:
    """Rows holding, at any depth, a double that may have been sent as an integer.

    None when the type holds no double. Rows may be flagged by values under a null (a false
    positive costs a ``json.loads``; a miss would cost a wrong row).
    """
    type_ = values.type
    if not _holds(type_, pa.types.is_floating):
        return None
    if pa.types.is_floating(type_):
        numbers = values.to_numpy(zero_copy_only=False)  # nulls become NaN
        return np.trunc(numbers) == numbers
    found = np.zeros(len(values), dtype=bool)
    if pa.types.is_struct(type_):
        for i in range(type_.num_fields):
            rows = _integral_rows(values.field(i))
            if rows is not None:
                found |= rows
    elif pa.types.is_list(type_):
        offsets = values.offsets.to_numpy()
        items = values.values.slice(offsets[0], offsets[-1] - offsets[0])
        rows = _integral_rows(items)
        if rows is not None:
            owner = np.repeat(np.arange(len(values)), np.diff(offsets))
            found[owner[rows]] = True
    return found


#: Longest RE2 pattern given to pyarrow at once; more names are split over several patterns.
_MAX_PATTERN = 20_000
#: The short escapes JSON has, as the character after the backslash.
_SHORT_ESCAPES = dict(zip('"\\/\b\f\n\r\t', '"\\/bfnrt', strict=True))


def _sends_null(bodies: Sequence[bytes], names: Iterable[str]) -> np.ndarray:
    """Which bodies contain ``"name": null`` for one of ``names``, however it is written.

    A single pass of RE2 (through pyarrow) over each body; the bodies go in as binary, so the
    pattern works on bytes.
    """
    found = np.zeros(len(bodies), dtype=bool)
    spelled = [_spelled(name) for name in sorted(names)]
    if not spelled:
        return found
    groups: list[list[str]] = [[]]
    size = 0
    for pattern in spelled:
        if groups[-1] and size + len(pattern) > _MAX_PATTERN:
            groups.append([])
            size = 0
        groups[-1].append(pattern)
        size += len(pattern)
    offsets = np.zeros(len(bodies) + 1, dtype=np.int64)
    np.cumsum([len(body) for body in bodies], out=offsets[1:])
    texts = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(bodies),
        [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(bodies))],
    )
    for group in groups:
        pattern = r"\x22(?:" + "|".join(group) + r")\x22[\t\n\r ]*:[\t\n\r ]*null"
        try:
            hits = pc.match_substring_regex(texts, pattern)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # too large, or no RE2
            return np.ones(len(bodies), dtype=bool)
        found |= hits.to_numpy(zero_copy_only=False)
    return found


@functools.lru_cache(maxsize=4096)
def _spelled(name: str) -> str:
    """An RE2 pattern over bytes for every way JSON can write the text of ``name``.

    Each character may come as itself (its UTF-8 bytes), as a ``\\u`` escape in either case
    (a surrogate pair beyond the BMP), or as a short escape (``\\n``, ``\\/`` ...).
    """
    return "".join(_spelled_char(char) for char in name)


def _spelled_char(char: str) -> str:
    forms = ["".join(_byte(b) for b in char.encode("utf-8", "surrogatepass"))]
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        forms.append(_u_escape(0xD800 + (code >> 10)) + _u_escape(0xDC00 + (code & 0x3FF)))
    else:
        forms.append(_u_escape(code))
    if char in _SHORT_ESCAPES:
        forms.append(_byte(0x5C) + _byte(ord(_SHORT_ESCAPES[char])))
    return "(?:" + "|".join(forms) + ")"


def _u_escape(code: int) -> str:
    digits = "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{code:04x}")
    return _byte(0x5C) + "u" + digits


def _byte(value: int) -> str:
    char = chr(value)
    return char if char.isascii() and (char.isalnum() or char == "_") else f"\\x{value:02x}"


def _without_null_members(value: Any) -> Any:
    """``value`` without its null object members, at any depth (null list items stay)."""
    if value.__class__ is dict:
        return {k: _without_null_members(v) for k, v in value.items() if v is not None}
    if value.__class__ is list:
        return [_without_null_members(v) for v in value]
    return value


def _exact_extras(body: bytes, rows: int) -> list[str | None]:
    """The ``extra`` of each session of one page, from ``json.loads`` as the records path.

    Raises ``_NotExact`` when the body does not parse to ``rows`` session objects.
    """
    try:
        records = json.loads(body)["data"]["data"]
    except (ValueError, RecursionError, TypeError, KeyError):
        raise _NotExact from None
    if records.__class__ is not list or len(records) != rows:
        raise _NotExact
    extras: list[str | None] = [None] * rows
    for i, record in enumerate(records):
        if record.__class__ is not dict:
            raise _NotExact
        contact = record.get("contact")
        if not record.keys() <= _KNOWN_KEYS or (
            contact.__class__ is dict and not contact.keys() <= _CONTACT_KEYS
        ):
            extras[i] = _extra_of(record, i)
    return extras


def parse_timestamps(values: pa.Array, field: str = "timestamp") -> pa.Array:
    """Parse ISO 8601 strings to ``timestamp[us, UTC]``, normalising every offset to UTC.

    Strings without an offset are taken as UTC; fractions finer than a microsecond are
    truncated. Anything else raises ``_FieldError`` naming the field and the value.
    """
    if values.type == _TS:
        return values
    try:
        return pc.cast(values, _TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    text = values.to_pylist()
    parsed: list[datetime | None] = []
    for row, value in enumerate(text):
        instant = None if value is None else _parse_iso(value)
        if value is not None and instant is None:
            raise _FieldError(field, row, f"'{field}' is not an ISO 8601 timestamp: {value!r:.80}")
        parsed.append(instant)
    return pa.array(parsed, type=_TS)


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


def _parse_iso(text: str) -> datetime | None:
    """Parse one ISO 8601 / RFC 3339 timestamp strictly; None when it is not one.

    The slow path behind Arrow's parser: it takes what Arrow refuses but the standard allows
    (fractions beyond microseconds, which are truncated; a date alone; no offset, read as UTC)
    and nothing else: no "now", no guessed offsets.
    """
    match = _ISO.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        instant = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    if offset and offset not in ("Z", "z"):
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        if delta >= timedelta(hours=24) or int(digits[2:] or 0) >= 60:
            return None
        instant = instant - delta if offset[0] == "+" else instant + delta
    return instant


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


# --------------------------------------------------------------------------- whole frames


def finish(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate batches in fetch order and keep one row per uuid (latest ``updated_at``).

    Batches arrive in completion order, but each page's rows are contiguous inside its batch,
    so ordering whole pages restores the API's order without a row sort. One ``take`` does
    it: the frame's columns come out in one chunk each (hundreds of page slices would make
    ``to_pandas`` and everything after it slower).
    """
    pieces: list[tuple[int, int, int, int]] = []
    offset = 0
    for table in tables:
        query = table.column("_query").to_numpy()
        page = table.column("_page").to_numpy()
        cuts = np.flatnonzero((query[1:] != query[:-1]) | (page[1:] != page[:-1])) + 1
        bounds = [0, *cuts.tolist(), table.num_rows] if table.num_rows else []
        for start, stop in pairwise(bounds):
            pieces.append((int(query[start]), int(page[start]), offset + start, stop - start))
        offset += table.num_rows
    if not pieces:
        return empty_table()
    pieces.sort()
    table = pa.concat_tables([t for t in tables if t.num_rows]).drop_columns(list(ORDER_COLUMNS))
    try:
        order = np.concatenate([np.arange(start, start + n) for _, _, start, n in pieces])
        return deduplicate(table.take(pa.array(order)))
    except pa.ArrowInvalid:  # a string column over 2 GiB cannot be one chunk: page slices
        return deduplicate(pa.concat_tables([table.slice(s, n) for _, _, s, n in pieces]))


def deduplicate(table: pa.Table, tiebreak: str | None = None) -> pa.Table:
    """Keep one row per ``uuid``: the most recently updated, then the most recently fetched.

    ``tiebreak`` names one more column whose largest value wins a remaining tie (snapshots
    use their sortable ``snapshot_id``, so the later of two same-second syncs wins).
    """
    if table.num_rows == 0:
        return table
    uuids = table.column("uuid").combine_chunks()
    # pc.unique rather than pc.count_distinct: the same answer, and the aggregate's set-up
    # was measured at 5-60 ms right after a load (unique: ~2 ms for 20,000 uuids).
    if len(pc.unique(uuids)) == table.num_rows:
        return table
    keys = [("updated_at", "descending"), ("fetched_at", "descending")]
    if tiebreak is not None:
        keys.append((tiebreak, "descending"))
    # Nulls sort last by default: a row without updated_at loses to one with it.
    order = pc.sort_indices(table, keys)
    codes = uuids.take(order).dictionary_encode().indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    keep = np.sort(order.to_numpy()[first])
    return table.take(pa.array(keep))


def sessions_frame(
    records: Iterable[Mapping[str, Any]],
    *,
    status: str | None = None,
    type: str | None = None,
    fetched_at: datetime | str | None = None,
) -> pd.DataFrame:
    """Build the sessions frame from session dicts already in hand.

    The same columns, dtypes and rules as :func:`mihu_frames.load_sessions`: ``contact`` is
    flattened, timestamps parsed to UTC, durations derived, undocumented fields kept as JSON in
    ``extra``, one row per ``uuid`` (the most recently updated wins).

    Parameters
    ----------
    records : iterable of dict
        Sessions as the API sends them (the items of ``data.data``).
    status, type : str, optional
        Tag every row with the filter value these sessions were fetched under.
    fetched_at : datetime or str, optional
        When the sessions were fetched; open sessions count as running until then in
        :func:`mihu_frames.activity`. Null when not given.

    Returns
    -------
    pandas.DataFrame
        One row per session in the documented schema.

    Raises
    ------
    ResponseFormatError
        A record is not an object, or a field has a value of the wrong type.

    Examples
    --------
    >>> import mihu_frames as mf
    >>> df = mf.sessions_frame([{"uuid": "3c90c3cc-0d44-4b50-8888-8dd25736052a",
    ...                          "started_at": "2026-03-01T10:00:00Z",
    ...                          "ended_at": "2026-03-01T10:05:30+00:00"}])
    >>> df.loc[0, "duration"]
    Timedelta('0 days 00:05:30')
    """
    for name, value, allowed in (("status", status, STATUS_VALUES), ("type", type, TYPE_VALUES)):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)} or None, got {value!r}")
    records = records if isinstance(records, list) else list(records)
    fetched = _utc(pd.Timestamp(fetched_at).to_pydatetime()) if fetched_at is not None else None
    info = PageInfo(conversation=None, page=0, status=status, type=type, fetched_at=fetched)  # type: ignore[arg-type]
    try:
        sessions, extra = _records_to_struct(records)
        parents = np.zeros(len(records), dtype=np.int64)
        table = _build_batch(sessions, parents, np.arange(len(records)), [info], extra)
    except _FieldError as exc:
        raise ResponseFormatError(f"session {exc.row}: {exc.detail}", field=exc.field) from None
    return to_pandas(finish([table]))


def batch_size(per_page: int) -> int:
    """How many pages to decode at once: about 5,000 sessions.

    pyarrow's JSON reader has a fixed cost per call and parses blocks of a call in parallel;
    below ~2,000 sessions a call costs more than ``json.loads`` of the same bytes, at ~5,000
    it costs about two thirds of it (measured with 100-session pages).
    """
    return max(4, math.ceil(5000 / max(per_page, 1)))
