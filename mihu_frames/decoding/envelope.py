"""The documented response envelope: its checks, and its paginator read without decoding.

A page is only used when its body is the documented envelope: ``success`` true, ``data`` an
object with integer ``current_page``, ``total``, ``last_page`` and ``per_page`` and a list
``data.data``. The paginator must be possible and self-consistent: ``current_page`` is the page
asked for, ``last_page`` is what ``total`` and ``per_page`` imply (a short ``last_page`` would
silently drop the sessions beyond it), and a page holds at most ``per_page`` sessions. The
checks exist twice, for the two decoders that share them: on an Arrow table of many pages
(:func:`check_envelopes`, vectorised) and on one ``json.loads`` result (:func:`parse_envelope`).
Every failure is a :class:`~mihu_frames.errors.ResponseFormatError` that names the
conversation, the page and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.decoding.nesting import MAX_EXTRA_DEPTH, value_depth
from mihu_frames.errors import ResponseFormatError

ENVELOPE_INTS = ("current_page", "total", "last_page", "per_page")
_ENVELOPE_KEYS = frozenset({"success", "message", "data"})
_DATA_KEYS = frozenset({*ENVELOPE_INTS, "data"})


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
    #: Timestamps on the page outside years 1-9999 once their offset is applied (now null).
    out_of_range: int = 0


class FieldError(Exception):
    """A bad value at a known session row; the caller turns it into ResponseFormatError."""

    def __init__(self, field: str, row: int, detail: str) -> None:
        super().__init__(detail)
        self.field, self.row, self.detail = field, row, detail


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


def _null_as_false(mask: pa.Array) -> pa.BooleanArray:
    """A boolean ``mask`` with its nulls made false."""
    # pyarrow-stubs type the result as array, scalar or chunked array, whatever the input
    return cast(pa.BooleanArray, pc.fill_null(mask, pa.scalar(False)))


def check_envelopes(
    pages: pa.Table, data: pa.StructArray, infos: Sequence[PageInfo]
) -> list[PageEnvelope]:
    success = pages.column("success").combine_chunks()
    columns = {name: data.field(name) for name in ENVELOPE_INTS}
    checks = [("success", _null_as_false(success)), ("data", data.is_valid())]
    checks += [(f"data.{n}", col.is_valid()) for n, col in columns.items()]
    checks.append(("data.data", data.field("data").is_valid()))
    for field, ok in checks:
        ok = pc.and_(ok, data.is_valid()) if field != "success" else ok
        if not pc.all(_null_as_false(ok)).as_py():
            bad = int(np.flatnonzero(~ok.to_numpy(zero_copy_only=False))[0])
            raise format_error(infos[bad], field, missing_detail(field, pages, bad))
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
        check_paginator(envelope, info)
        envelopes.append(envelope)
    return envelopes


def missing_detail(field: str, pages: pa.Table, row: int) -> str:
    if field == "success":
        message = pages.column("message")[row].as_py()
        return f"'success' is not true (message: {message!r})"
    return f"'{field}' is missing or null"


def check_paginator(envelope: PageEnvelope, info: PageInfo) -> None:
    if envelope.current_page != info.page:
        raise format_error(
            info, "data.current_page", f"asked for page {info.page}, got {envelope.current_page}"
        )
    if envelope.last_page < 1 or envelope.per_page < 1 or envelope.total < 0:
        raise format_error(
            info,
            "data.last_page",
            f"impossible paginator (last_page={envelope.last_page}, "
            f"per_page={envelope.per_page}, total={envelope.total})",
        )
    if envelope.rows > envelope.per_page:
        raise format_error(
            info, "data.data", f"{envelope.rows} sessions on a page of {envelope.per_page}"
        )
    # total and last_page come from one count, so they must agree; trusting a short
    # last_page would silently drop the sessions beyond it. (Rows on the last page may differ
    # from what total implies: the count and the page are separate queries while data moves.)
    pages = max(1, math.ceil(envelope.total / envelope.per_page))
    if envelope.last_page != pages:
        raise format_error(
            info,
            "data.last_page",
            f"last_page={envelope.last_page} disagrees with total={envelope.total} "
            f"at per_page={envelope.per_page} ({pages} pages)",
        )


def parse_envelope(payload: Any, info: PageInfo) -> tuple[PageEnvelope, list[Any]]:
    """Check a decoded JSON body against the documented envelope.

    Returns the paginator fields and the list of session records; raises
    :class:`ResponseFormatError` naming the first field that is wrong.
    """
    if not isinstance(payload, Mapping):
        raise format_error(info, None, f"body is a JSON {type(payload).__name__}, not an object")
    if payload.get("success") is not True:
        detail = f"'success' is not true (message: {payload.get('message')!r})"
        raise format_error(info, "success", detail)
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise format_error(info, "data", "'data' is missing or not an object")
    values = {}
    for name in ENVELOPE_INTS:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise format_error(info, f"data.{name}", f"expected an integer, got {value!r}")
        values[name] = value
    for where, members, known in ((None, payload, _ENVELOPE_KEYS), ("data", data, _DATA_KEYS)):
        for name, value in members.items():
            if name not in known and value_depth(value) > MAX_EXTRA_DEPTH:
                field = f"{where}.{name}" if where else str(name)
                detail = f"nests deeper than {MAX_EXTRA_DEPTH} levels"
                raise format_error(info, field[:60], detail)
    records = data.get("data")
    if not isinstance(records, list):
        raise format_error(info, "data.data", f"expected a list, got {type(records).__name__}")
    envelope = PageEnvelope(**values, rows=len(records))
    check_paginator(envelope, info)
    return envelope, records


def format_error(info: PageInfo, field: str | None, detail: str) -> ResponseFormatError:
    where = f"field '{field}': " if field else ""
    return ResponseFormatError(
        f"response is not the documented format: {where}{detail}",
        field=field,
        conversation=info.conversation or None,
        page=info.page,
    )
