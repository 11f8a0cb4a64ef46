"""Session dicts to Arrow: the ``json.loads`` decoder, and :func:`sessions_frame`.

pyarrow converts a list of session dicts to a struct array of the documented types in one C++
pass; undocumented keys are found with key-view comparisons and only the records that have
them are visited in Python (:func:`~mihu_frames.decoding.extra.extra_of`). When a value does
not fit its documented type the first offending field and row are named
(:class:`~mihu_frames.decoding.envelope.FieldError`), never a bare pyarrow error. This is the
decoder of pages pyarrow's JSON reader refuses (:func:`decode_page_slowly`) and of the records
an analyst already holds (:func:`sessions_frame`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mihu_frames.decoding.batch import build_batch
from mihu_frames.decoding.envelope import (
    FieldError,
    PageEnvelope,
    PageInfo,
    format_error,
    parse_envelope,
)
from mihu_frames.decoding.extra import CONTACT_KEYS, KNOWN_KEYS, extra_of
from mihu_frames.decoding.timestamps import utc
from mihu_frames.errors import ResponseFormatError
from mihu_frames.frame import finish
from mihu_frames.schema import (
    API_SESSION_TYPE,
    CONTACT_FIELDS,
    STATUS_VALUES,
    TYPE_VALUES,
    to_pandas,
)


def records_to_struct(records: Sequence[Any]) -> tuple[pa.StructArray, pa.Array | None]:
    """Session dicts to a struct array of the API's types, and undocumented keys as JSON.

    pyarrow converts the dicts in one C++ pass and ignores keys outside the type; those keys
    are found with key-view comparisons (C-level too) and only the rare records that have
    them are visited in Python.
    """
    if not all(type(r) is dict for r in records):
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise FieldError("data.data", i, f"expected an object, got {type(record).__name__}")
        records = [dict(r) for r in records]
    # pyarrow would read a string as a list of its characters: refuse it first.
    tasks = map(dict.get, records, repeat("task_uuids"))
    for i, value in enumerate(tasks):
        if value is not None and value.__class__ is not list and not isinstance(value, tuple):
            raise FieldError("task_uuids", i, f"expected a list of strings, got {value!r:.80}")
    try:
        known = pa.array(records, type=API_SESSION_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        _find_bad_value(records)
        raise
    except UnicodeError:  # a lone surrogate from a "\ud800" escape
        row, name = _find_bad_text(records, lambda text: not _encodes(text))
        raise FieldError(name, row, "a string is not valid Unicode") from None
    assert isinstance(known, pa.StructArray)  # API_SESSION_TYPE is a struct type
    odd = {i for i, r in enumerate(records) if not r.keys() <= KNOWN_KEYS}
    odd.update(
        i
        for i, c in enumerate(map(dict.get, records, repeat("contact")))
        if c.__class__ is dict and not c.keys() <= CONTACT_KEYS
    )
    if not odd:
        return known, None
    extras: list[str | None] = [None] * len(records)
    for i in odd:
        extras[i] = extra_of(records[i], i)
    return known, pa.array(extras, type=pa.string())


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
    raise format_error(info, name, f"session {row}: '{name}' is not valid UTF-8")


def _find_bad_value(records: Sequence[Mapping[str, Any]]) -> None:
    """Raise a FieldError for the first value that does not fit the documented type."""
    for i, record in enumerate(records):
        for name in API_SESSION_TYPE.names:
            value = record.get(name)
            if value is not None:
                _check_value(name, value, i)


def _check_value(name: str, value: Any, row: int) -> None:
    """Raise a FieldError if ``value``, not null, does not fit field ``name``'s type."""
    if name == "contact":
        _check_contact(value, row)
    elif name == "task_uuids":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FieldError(name, row, f"expected a list of strings, got {value!r:.80}")
    elif not isinstance(value, str):
        raise FieldError(name, row, f"expected a string, got {value!r:.80}")


def _check_contact(value: Any, row: int) -> None:
    if not isinstance(value, Mapping):
        raise FieldError("contact", row, f"expected an object or null, got {value!r:.80}")
    for key in CONTACT_FIELDS:
        if value.get(key) is not None and not isinstance(value.get(key), str):
            got = f"{value.get(key)!r:.80}"
            raise FieldError(f"contact.{key}", row, f"expected a string, got {got}")


def decode_page_slowly(body: bytes, info: PageInfo) -> tuple[pa.Table, PageEnvelope]:
    """Decode one page with ``json.loads``: slower, and every error names its field and row."""
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        try:
            lenient = json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            snippet = body[:80].decode("utf-8", "replace")
            raise format_error(
                info, None, f"body is not JSON (nor UTF-8); it starts {snippet!r}"
            ) from None
        _raise_bad_text(lenient, info)
        raise  # pragma: no cover - _raise_bad_text always raises
    except RecursionError:
        raise format_error(info, None, "body nests too deeply to be a page") from None
    except ValueError as exc:
        snippet = body[:80].decode("utf-8", "replace")
        raise format_error(info, None, f"body is not JSON ({exc}); it starts {snippet!r}") from None
    envelope, records = parse_envelope(payload, info)
    try:
        sessions, extra = records_to_struct(records)
        rows = np.arange(len(records))
        parents = np.zeros(len(records), dtype=np.int64)
        batch = build_batch(sessions, parents, rows, [info], extra)
    except FieldError as exc:
        raise format_error(info, exc.field, f"session {exc.row}: {exc.detail}") from None
    return batch.table, replace(envelope, out_of_range=int(batch.out_of_range[0]))


def sessions_frame(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any],
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
    records : iterable of dict, or dict
        Sessions as the API sends them (the items of ``data.data``); or a whole response
        (``response.json()``: the envelope, checked as a load checks it), or a list of them.
    status, type : str, optional
        Tag every row with the filter value these sessions were fetched under.
    fetched_at : datetime or str, optional
        When the sessions were fetched; open sessions count as running until then in
        :func:`mihu_frames.activity`. Null when not given.

    Returns
    -------
    pandas.DataFrame
        One row per session in the documented schema. A timestamp outside years 1-9999 once
        its offset is applied is null, its text kept in ``extra``; they are counted in
        ``df.attrs["mihu_frames"]["timestamps_out_of_range"]``, with a warning.

    Raises
    ------
    ResponseFormatError
        A record is not an object, a field has a value of the wrong type, or a response is
        not the documented envelope.

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
    sessions_list = _sessions_of(records)
    fetched = utc(pd.Timestamp(fetched_at).to_pydatetime()) if fetched_at is not None else None
    info = PageInfo(conversation=None, page=0, status=status, type=type, fetched_at=fetched)  # type: ignore[arg-type]
    try:
        sessions, extra = records_to_struct(sessions_list)
        parents = np.zeros(len(sessions_list), dtype=np.int64)
        batch = build_batch(sessions, parents, np.arange(len(sessions_list)), [info], extra)
    except FieldError as exc:
        raise ResponseFormatError(f"session {exc.row}: {exc.detail}", field=exc.field) from None
    df = to_pandas(finish([batch.table]))
    lost = int(batch.out_of_range.sum())
    df.attrs["mihu_frames"] = {"timestamps_out_of_range": lost}
    if lost:
        warnings.warn(
            f"{lost} timestamp(s) fall outside years 1-9999 once their offset is applied: "
            "loaded as null, their text kept in 'extra'",
            RuntimeWarning,
            stacklevel=2,
        )
    return df


def _sessions_of(records: Any) -> list[Any]:
    """The session dicts in ``records``: a list of sessions, an envelope, or a list of them."""
    if isinstance(records, Mapping):
        return _envelope_sessions(records, 0)
    records = records if isinstance(records, list) else list(records)
    if records and all(_is_envelope(r) for r in records):
        return [s for i, r in enumerate(records) for s in _envelope_sessions(r, i)]
    return records


def _is_envelope(value: Any) -> bool:
    return isinstance(value, Mapping) and "success" in value and "data" in value


def _envelope_sessions(payload: Mapping[str, Any], index: int) -> list[Any]:
    data = payload.get("data")
    page = data.get("current_page") if isinstance(data, Mapping) else None
    info = PageInfo(conversation=None, page=page if isinstance(page, int) else index + 1)  # type: ignore[arg-type]
    _, sessions = parse_envelope(payload, info)
    return sessions
