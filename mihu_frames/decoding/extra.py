"""The ``extra`` column: every session field the documentation does not list, exactly as sent.

Nothing the API sends is lost: undocumented fields (and undocumented members of ``contact``)
are kept as one JSON object per session, keys sorted, in ``extra`` (null when there are none).
"Exactly" means the JSON that ``json.loads`` of the body and ``json.dumps`` would give: the
same numbers (an integer stays an integer, however large), the same explicit nulls.

Two paths produce it. From dicts (:func:`extra_of`: ``sessions_frame`` and pages decoded with
``json.loads``) it is direct. From pyarrow's JSON reader (:func:`fast_extra`) the inferred
values can say less than the text in two ways: a null object member may have been sent as
``null`` or left out, and a double may have been sent as an integer. :func:`_pages_to_reread`
finds every page where either may have happened (an RE2 pass over the bodies for each
undocumented member name in every JSON spelling, and a check for doubles without a fraction);
only those pages are read again with ``json.loads``. Nesting deeper than
:data:`MAX_EXTRA_DEPTH` is refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames import _spelling as spelling
from mihu_frames.decoding.envelope import FieldError
from mihu_frames.decoding.nesting import MAX_EXTRA_DEPTH, value_depth
from mihu_frames.schema import API_SESSION_TYPE, CONTACT_FIELDS

logger = logging.getLogger("mihu_frames")

KNOWN_KEYS = frozenset(API_SESSION_TYPE.names)
CONTACT_KEYS = frozenset(CONTACT_FIELDS)


JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True)


def extra_of(record: dict[str, Any], row: int) -> str | None:
    """The JSON of one session's undocumented fields (and its contact's), or None."""
    extra = {k: record[k] for k in record.keys() - KNOWN_KEYS}
    contact = record.get("contact")
    nested: dict[str, Any] = {}
    if contact.__class__ is dict:
        nested = {k: contact[k] for k in contact.keys() - CONTACT_KEYS}
    for name, value in [*extra.items(), *nested.items()]:
        if value_depth(value) > MAX_EXTRA_DEPTH:
            detail = f"undocumented field {name!r:.40} nests deeper than {MAX_EXTRA_DEPTH} levels"
            raise FieldError("extra", row, detail)
    if nested:
        extra["contact"] = nested
    if not extra:
        return None
    try:
        return JSON.encode(extra)
    except (TypeError, ValueError, UnicodeError) as exc:  # values sessions_frame was handed
        raise FieldError("extra", row, f"undocumented fields are not JSON: {exc}") from None


class NotExact(Exception):
    """``json.loads`` of a page does not agree with the reader's table of it."""


def fast_extra(
    sessions: pa.StructArray, parents: np.ndarray, bodies: Sequence[bytes], texts: pa.Array
) -> pa.Array:
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
    texts : pyarrow.LargeBinaryArray
        The same bodies as one array (each may end with the newline the reader saw after it).

    Returns
    -------
    pyarrow.StringArray
        JSON text of each session's undocumented fields, null where there are none.

    Raises
    ------
    NotExact
        ``json.loads`` of a page disagrees with the reader (decode page by page instead).
    FieldError
        Undocumented fields of a re-read page nest deeper than ``MAX_EXTRA_DEPTH``.
    """
    n = len(sessions)
    parts = _extra_parts(sessions)
    if not parts:
        return pa.nulls(n, pa.string())
    reread = _pages_to_reread(parts, parents, texts)
    out: list[str | None] = [None] * n
    present = np.zeros(n, dtype=bool)
    for values in parts.values():
        present |= values.is_valid().to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(present & ~reread[parents])
    if len(rows):
        index = pa.array(rows, type=pa.int64())
        taken = {name: values.take(index).to_pylist() for name, values in parts.items()}
        nested = [name for name, values in parts.items() if _has_null_members(values)]
        for j, row in enumerate(rows):
            item = {name: values[j] for name, values in taken.items() if values[j] is not None}
            for name in nested:
                if name in item:
                    item[name] = _without_null_members(item[name])
            out[row] = JSON.encode(item)
    for page in np.flatnonzero(reread):
        start, stop = (int(i) for i in np.searchsorted(parents, [page, page + 1]))
        if stop > start:
            out[start:stop] = exact_extras(bodies[int(page)], stop - start)
    try:
        return pa.array(out, type=pa.string())
    except UnicodeError:  # a lone surrogate escape that only json.loads let through
        raise NotExact from None


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
    contact_extra: list[int] = []
    contact_fields: list[pa.Field] = []
    if isinstance(contact_type, pa.StructType):
        contact_extra = [i for i, f in enumerate(contact_type) if f.name not in CONTACT_KEYS]
        contact_fields = [contact_type.field(i) for i in contact_extra]
    if not contact_extra and all(name in KNOWN_KEYS for name in names):
        return {}
    flat = sessions.flatten()
    parts = {name: flat[i] for i, name in enumerate(names) if name not in KNOWN_KEYS}
    if contact_extra:
        contact = flat[names.index("contact")]
        assert isinstance(contact, pa.StructArray)  # its type is a struct (contact_extra)
        children = contact.flatten()
        arrays = [children[i] for i in contact_extra]
        some = np.zeros(len(sessions), dtype=bool)
        for values in arrays:
            some |= values.is_valid().to_numpy(zero_copy_only=False)
        parts["contact"] = pa.StructArray.from_arrays(
            arrays,
            fields=contact_fields,
            mask=pa.array(~some),
        )
    return parts


def _pages_to_reread(
    parts: Mapping[str, pa.Array], parents: np.ndarray, texts: pa.Array
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
    integral = np.zeros(len(texts), dtype=bool)
    for values in parts.values():
        rows = _integral_rows(values)
        if rows is not None:
            integral[parents[rows]] = True
    names = {name for name in parts if name != "contact"}
    for values in parts.values():
        _member_names(values.type, names)
    nulls = _sends_null(texts, names)
    reread = integral | nulls
    if reread.any():
        logger.debug(
            "re-reading %d of %d pages with json.loads for an exact 'extra': %d hold a double "
            "without a fraction, %d a null member (undocumented names: %d)",
            reread.sum(),
            len(texts),
            integral.sum(),
            nulls.sum(),
            len(names),
        )
    return reread


def _has_null_members(values: pa.Array) -> bool:
    """Whether an object in ``values``, at any depth, has a null member."""
    if isinstance(values, pa.StructArray):
        return any(
            child.null_count > values.null_count or _has_null_members(child)
            for child in values.flatten()  # the parent's nulls applied
        )
    if isinstance(values, pa.ListArray):
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
    if isinstance(values, pa.StructArray):
        for i in range(values.type.num_fields):
            rows = _integral_rows(values.field(i))
            if rows is not None:
                found |= rows
    elif isinstance(values, pa.ListArray):
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
def _sends_null(texts: pa.Array, names: Iterable[str]) -> np.ndarray:
    """Which bodies contain ``"name": null`` for one of ``names``, however it is written.

    A single pass of RE2 (through pyarrow) over each body; the bodies go in as binary
    (``texts``), so the pattern works on bytes.
    """
    found = np.zeros(len(texts), dtype=bool)
    spelled = [spelling.spelled(name) for name in sorted(names)]
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
    for group in groups:
        pattern = r"\x22(?:" + "|".join(group) + r")\x22[\t\n\r ]*:[\t\n\r ]*null"
        try:
            hits = pc.match_substring_regex(texts, pattern)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # too large, or no RE2
            return np.ones(len(texts), dtype=bool)
        found |= hits.to_numpy(zero_copy_only=False)
    return found


def _without_null_members(value: Any) -> Any:
    """``value`` without its null object members, at any depth (null list items stay)."""
    if value.__class__ is dict:
        return {k: _without_null_members(v) for k, v in value.items() if v is not None}
    if value.__class__ is list:
        return [_without_null_members(v) for v in value]
    return value


def exact_extras(body: bytes, rows: int) -> list[str | None]:
    """The ``extra`` of each session of one page, from ``json.loads`` as the records path.

    Raises ``NotExact`` when the body does not parse to ``rows`` session objects.
    """
    try:
        records = json.loads(body)["data"]["data"]
    except (ValueError, RecursionError, TypeError, KeyError):
        raise NotExact from None
    if records.__class__ is not list or len(records) != rows:
        raise NotExact
    extras: list[str | None] = [None] * rows
    for i, record in enumerate(records):
        if record.__class__ is not dict:
            raise NotExact
        contact = record.get("contact")
        if not record.keys() <= KNOWN_KEYS or (
            contact.__class__ is dict and not contact.keys() <= CONTACT_KEYS
        ):
            extras[i] = extra_of(record, i)
    return extras
