"""Page bodies to Arrow, many at once, with pyarrow's JSON reader and the envelope's schema.

:func:`decode_pages` is the load's decoder: a batch of raw bodies becomes one table in the
frame's schema without a Python object per session. The reader parses the documented fields
straight into their types (timestamps included) under an explicit schema; undocumented fields
are inferred and rebuilt as exact JSON (:mod:`~mihu_frames.decoding.extra`).

The fast path is only taken when its result can be trusted; otherwise the batch is decoded page
by page with ``json.loads`` (:func:`~mihu_frames.decoding.records.decode_page_slowly`), which
also names the page, the field and the value of any error:

- every body is one line holding an object (the reader takes one JSON document per line, and
  crashes the process on a bare ``null``);
- the reader validates the table (it does not check UTF-8 itself);
- undocumented values are only strings, booleans, int64, doubles, nulls, and lists and objects
  of them, nested at most ``MAX_EXTRA_DEPTH`` deep (a date-like string inferred as a timestamp
  would not be written back as sent);
- no timestamp falls outside years 1-9999 (its text must be kept).

Bodies nested deeper than the reader can take safely never reach it
(:mod:`mihu_frames.decoding.nesting`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import IO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from mihu_frames.decoding.batch import OutOfRange, build_batch
from mihu_frames.decoding.envelope import FieldError, PageEnvelope, PageInfo, check_envelopes
from mihu_frames.decoding.extra import (
    CONTACT_KEYS,
    KNOWN_KEYS,
    NotExact,
    fast_extra,
)
from mihu_frames.decoding.nesting import MAX_EXTRA_DEPTH, MAX_READER_DEPTH, deepest, openers
from mihu_frames.decoding.records import decode_page_slowly
from mihu_frames.frame import with_order
from mihu_frames.schema import API_PAGE_SCHEMA, empty_table

_FAST_BODY = re.compile(rb"\A[ \t\r]*\{")
#: A measured body nested deeper than this goes to ``json.loads``, which checks every
#: undocumented value's own depth: such a value may start right inside the envelope (depth 1).
MAX_PAGE_DEPTH = 1 + MAX_EXTRA_DEPTH


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
        return with_order(empty_table(), [], [], []), []
    # The reader takes one page per line, so a body with a raw newline (pretty-printed, or a
    # newline inside a string, which JSON forbids) goes to json.loads; so does anything that
    # is not an object (the reader crashes the process on a bare ``null``), and anything
    # nested deeper than the reader takes safely (it stalls, then crashes, on deep nesting).
    pages, texts = None, None
    if all(_FAST_BODY.match(b) and b"\n" not in b for b in bodies):
        texts = _one_per_line(bodies)
        deep = np.flatnonzero(openers(texts) > MAX_READER_DEPTH).tolist()
        if not len(deep) or deepest(bodies[i] for i in deep) <= MAX_PAGE_DEPTH:
            try:
                longest = max(len(b) for b in bodies)
                threads = use_threads and len(bodies) > 4
                pages = _read_envelopes(texts, longest, threads)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
                pages = None
    if (
        texts is not None
        and pages is not None
        and pages.num_rows == len(bodies)
        and _fast_path_safe(pages)
    ):
        data = pages.column("data").combine_chunks()
        assert isinstance(data, pa.StructArray)  # API_PAGE_SCHEMA's "data" is a struct
        envelopes = check_envelopes(pages, data, infos)
        lists = data.field("data")
        assert isinstance(lists, pa.ListArray)  # ... and its "data" a list of sessions
        # pyarrow-stubs type list_flatten's result as a list; it is the values, here structs
        sessions = cast(pa.StructArray, pc.list_flatten(lists))
        parents = pc.list_parent_indices(lists).to_numpy()
        offsets = lists.offsets.to_numpy()
        rows = np.arange(len(parents)) - offsets[parents]
        try:
            extra = fast_extra(sessions, parents, bodies, texts)
            return build_batch(sessions, parents, rows, infos, extra).table, envelopes
        except (FieldError, NotExact, OutOfRange):
            pass  # decode page by page below: the error names its page, the text is at hand
    # The fast reader refused the batch: decode page by page to find and name the problem.
    tables, envelopes = [], []
    for body, info in zip(bodies, infos, strict=True):
        table, envelope = decode_page_slowly(body, info)
        tables.append(table)
        envelopes.append(envelope)
    return pa.concat_tables(tables), envelopes


#: Types the reader may infer for undocumented fields and still write back as JSON values.
_PLAIN = (pa.types.is_string, pa.types.is_boolean, pa.types.is_int64, pa.types.is_float64)


def _plain_type(type_: pa.DataType, depth: int = 0) -> bool:
    if pa.types.is_struct(type_) or pa.types.is_list(type_):
        if depth + 1 > MAX_EXTRA_DEPTH:
            return False
        children = [f.type for f in type_] if pa.types.is_struct(type_) else [type_.value_type]
        return all(_plain_type(child, depth + 1) for child in children)
    return pa.types.is_null(type_) or any(ok(type_) for ok in _PLAIN)


_DATA_KEYS = {field.name for field in API_PAGE_SCHEMA.field("data").type}


def _depth(type_: pa.DataType) -> int:
    """How deeply lists and structs nest in an inferred type (a value of it nests as deep)."""
    if pa.types.is_struct(type_):
        return 1 + max((_depth(field.type) for field in type_), default=0)
    if pa.types.is_list(type_):
        return 1 + _depth(type_.value_type)
    return 0


def _fast_path_safe(pages: pa.Table) -> bool:
    """Whether the reader's table says what the bodies said.

    The reader does not check UTF-8, and for undocumented fields it infers types: a date-like
    string becomes a timestamp. Such batches, and undocumented values nested deeper than
    ``MAX_EXTRA_DEPTH``, go through ``json.loads`` instead. (Where the inferred values of the
    plain types say less than the text, :func:`fast_extra` re-reads those pages.) Undocumented
    envelope fields are not kept, but one nested too deep is refused as ``json.loads`` would.
    """
    try:
        pages.validate(full=True)
    except pa.ArrowInvalid:
        return False
    data = pages.schema.field("data").type
    envelope_extra = [f for f in pages.schema if f.name not in API_PAGE_SCHEMA.names]
    envelope_extra += [f for f in data if f.name not in _DATA_KEYS]
    if any(_depth(f.type) > MAX_EXTRA_DEPTH for f in envelope_extra):
        return False
    session = data.field("data").type.value_type
    for field in session:
        if field.name in KNOWN_KEYS and field.name != "contact":
            continue
        if field.name == "contact":
            extra = [f for f in field.type if f.name not in CONTACT_KEYS]
        else:
            extra = [field]
        if not all(_plain_type(f.type) for f in extra):
            return False
    return True


def _one_per_line(bodies: Sequence[bytes]) -> pa.LargeBinaryArray:
    """The bodies in one buffer, each followed by a newline, as an array of one body each.

    The buffer comes from pyarrow's memory pool, which reuses what it freed; a ``bytes`` of
    the same size (several megabytes) is mapped afresh from the system each time, and that
    page-faulting was measured to cost more than the copy.
    """
    sizes = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies))
    offsets = np.zeros(len(bodies) + 1, dtype=np.int64)
    np.cumsum(sizes + 1, out=offsets[1:])
    buffer = pa.allocate_buffer(int(offsets[-1]))
    view = np.frombuffer(memoryview(buffer), dtype=np.uint8)  # (numpy's stubs: see nesting)
    for body, start, size in zip(bodies, offsets.tolist(), sizes.tolist(), strict=False):
        view[start : start + size] = np.frombuffer(body, dtype=np.uint8)
    view[offsets[1:] - 1] = 0x0A
    texts = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(bodies), [None, pa.py_buffer(offsets.data), buffer]
    )
    # pyarrow-stubs type from_buffers as returning a plain Array, whatever the class
    return cast(pa.LargeBinaryArray, texts)


def _read_envelopes(texts: pa.LargeBinaryArray, longest: int, use_threads: bool) -> pa.Table:
    block = max(1 << 20, longest + 2)
    lines = texts.buffers()[2]
    assert lines is not None  # a binary array always has its data buffer
    return pa_json.read_json(
        # pyarrow-stubs accept only paths and IO objects; read_json takes any NativeFile
        cast(IO[bytes], pa.BufferReader(lines)),
        read_options=pa_json.ReadOptions(use_threads=use_threads, block_size=block),
        parse_options=pa_json.ParseOptions(
            explicit_schema=API_PAGE_SCHEMA, unexpected_field_behavior="infer"
        ),
    )


def batch_size(per_page: int) -> int:
    """How many pages to decode at once: about 5,000 sessions.

    pyarrow's JSON reader has a fixed cost per call and parses blocks of a call in parallel;
    below ~2,000 sessions a call costs more than ``json.loads`` of the same bytes, at ~5,000
    it costs about two thirds of it (measured with 100-session pages).
    """
    return max(4, math.ceil(5000 / max(per_page, 1)))
