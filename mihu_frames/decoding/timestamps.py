"""ISO 8601 timestamps to ``timestamp[us, UTC]``, strictly.

Arrow's cast parses the common RFC 3339 forms in C; what it refuses goes through
:func:`_parse_iso`, which accepts exactly what ISO 8601 / RFC 3339 allow (fractions beyond
microseconds, truncated; a date alone; no offset, read as UTC) and nothing else: no "now", no
guessed offsets. Every offset is normalised to UTC.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.decoding.envelope import FieldError
from mihu_frames.schema import TIMESTAMP_TYPE

#: The instants a timestamp may hold, as microseconds since the epoch: years 1 to 9999 in UTC.
#: Python's ``datetime``, pandas' conversions and every engine reading a snapshot agree on them;
#: an instant outside (``9999-12-31T23:00:00-12:00`` is in year 10000) loads as null.
MIN_US = -62_135_596_800_000_000
MAX_US = 253_402_300_799_999_999
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_timestamps(
    values: pa.Array, field: str = "timestamp"
) -> tuple[pa.Array, np.ndarray | None]:
    """Parse ISO 8601 strings to ``timestamp[us, UTC]``, normalising every offset to UTC.

    Strings without an offset are taken as UTC; fractions finer than a microsecond are
    truncated. Anything else raises ``FieldError`` naming the field and the value.

    Returns
    -------
    parsed : pyarrow.TimestampArray
        ``timestamp[us, UTC]``; null where the text is null or out of range.
    out_of_range : numpy.ndarray of bool or None
        Rows whose instant falls outside years 1-9999 once its offset is applied (null in
        ``parsed``; the caller keeps their text), or None when there are none.
    """
    if values.type == TIMESTAMP_TYPE:
        parsed = values
    else:
        try:
            parsed = pc.cast(values, TIMESTAMP_TYPE)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            parsed = _parse_each(values, field)
    return in_range(parsed)


def in_range(parsed: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """``parsed`` with the instants outside years 1-9999 made null, and where they were."""
    if len(parsed) == parsed.null_count:
        return parsed, None
    micros = parsed.cast(pa.int64())
    low, high = pc.min_max(micros).values()
    if low.as_py() >= MIN_US and high.as_py() <= MAX_US:
        return parsed, None
    low_us, high_us = pa.scalar(MIN_US, pa.int64()), pa.scalar(MAX_US, pa.int64())
    outside = pc.or_(pc.less(micros, low_us), pc.greater(micros, high_us)).fill_null(False)
    return pc.if_else(outside, pa.scalar(None, TIMESTAMP_TYPE), parsed), outside.to_numpy(
        zero_copy_only=False
    )


def _parse_each(values: pa.Array, field: str) -> pa.Array:
    micros: list[int | None] = []
    for row, value in enumerate(values.to_pylist()):
        instant = None if value is None else _parse_iso(value)
        if value is not None and instant is None:
            raise FieldError(field, row, f"'{field}' is not an ISO 8601 timestamp: {value!r:.80}")
        micros.append(instant)
    return pa.array(micros, type=pa.int64()).cast(TIMESTAMP_TYPE)


# ASCII digits only: ``\d`` would take any script's digits ("٢٠٢٦" for 2026).
_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


def _parse_iso(text: str) -> int | None:
    """Parse one ISO 8601 / RFC 3339 timestamp strictly: microseconds since the epoch (UTC),
    possibly outside years 1-9999 once the offset is applied; None when it is not one.

    The slow path behind Arrow's parser: it takes what Arrow refuses but the standard allows
    (fractions beyond microseconds, which are truncated; a date alone; no offset, read as UTC)
    and nothing else: no "now", no guessed offsets.
    """
    match = _ISO.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(
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
    micros = (local - _EPOCH) // timedelta(microseconds=1)
    if offset and offset not in ("Z", "z"):
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours >= 24 or minutes >= 60:
            return None
        shift = (hours * 60 + minutes) * 60_000_000
        micros = micros - shift if offset[0] == "+" else micros + shift
    return micros


def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (a naive one is taken as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value
