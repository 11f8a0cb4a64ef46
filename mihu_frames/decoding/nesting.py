"""How deeply JSON nests in raw bytes, measured before any parser sees them.

pyarrow's JSON reader infers the types of undocumented values recursively: one value nested
512 levels deep costs it 20 ms, 2,000 levels 0.35 s, and at 20,000 it crashes the interpreter
(a segfault, not an exception). Documented fields are safe at any depth (the explicit schema
refuses a wrong shape at once). A server can send deep nesting in any undocumented field, so
no body nested deeper than ``MAX_READER_DEPTH`` may reach the reader.

Two measures, the cheap one first:

- :func:`openers` counts the ``[`` and ``{`` bytes of each body in a batch (numpy, about 1 ms
  for 5 MB). A body cannot nest deeper than it opens, and a full documented page of 100
  sessions opens about 300: nearly every page is cleared here.
- :func:`deepest` measures the rest exactly (an upper bound for a broken body), body by body so
  that no body can reach into the next (a trailing backslash, an unclosed string): escape
  sequences are removed (one regex pass: ``\\X`` for any X), every byte but quotes and
  brackets is deleted (``bytes.translate``), and numpy walks what is left: brackets count only
  outside strings, and quote parity restarts at each body. For text that is not JSON it may be
  too large, but then neither parser accepts the body anyway.

A body that passes may still hold an undocumented value nested deeper than
``MAX_EXTRA_DEPTH``: the reader's inferred types show it, and the decoder then reads the batch
with ``json.loads``, which refuses it (:class:`~mihu_frames.errors.ResponseFormatError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pyarrow as pa

#: The deepest an undocumented value may nest (its own arrays and objects): deeper is refused.
MAX_EXTRA_DEPTH = 64
#: The deepest a body may nest and still go to pyarrow's reader (its inference then costs at
#: most ~20 ms a body, measured with pyarrow 18-21).
MAX_READER_DEPTH = 512
_OPENER = 0x5B  # [, and { once bit 5 is cleared

_QUOTE, _NEWLINE = 0x22, 0x0A
#: +1 for an opening bracket, -1 for a closing one, 0 for any other byte.
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[0x7B, 0x5B]] = 1  # { [
_STEP[[0x7D, 0x5D]] = -1  # } ]
_ESCAPE = re.compile(rb"\\.", re.S)
#: Every byte but a quote and the four brackets.
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')


def openers(texts: pa.LargeBinaryArray) -> np.ndarray:
    """How many arrays and objects each text opens: an upper bound of how deeply it nests.

    Parameters
    ----------
    texts : pyarrow.LargeBinaryArray
        The texts (page bodies), without nulls.

    Returns
    -------
    numpy.ndarray
        One count per text, of its ``[`` and ``{`` bytes (strings included).

    Examples
    --------
    >>> import pyarrow as pa
    >>> openers(pa.array([b'{"a": [1]}', b'"[{"'], pa.large_binary())).tolist()
    [2, 2]
    """
    _, offsets, data = texts.buffers()
    assert offsets is not None and data is not None  # a binary array always has both
    # memoryview: numpy's stubs accept a pyarrow Buffer (PEP 688) only from Python 3.12 on
    starts = np.frombuffer(memoryview(offsets), dtype=np.int64)
    starts = starts[texts.offset : texts.offset + len(texts) + 1]
    # The scratch space comes from pyarrow's pool, which reuses what it freed: numpy's own
    # temporaries of a batch's size are mapped afresh each time, and the page faults were
    # measured to triple the cost.
    scratch = np.frombuffer(
        memoryview(pa.allocate_buffer(int(starts[-1] - starts[0]))), dtype=np.uint8
    )
    text = np.frombuffer(memoryview(data), dtype=np.uint8)[starts[0] : starts[-1]]
    np.bitwise_and(text, 0xDF, out=scratch)
    hits = scratch.view(bool)
    np.equal(scratch, _OPENER, out=hits)
    return np.diff(np.searchsorted(np.flatnonzero(hits), starts - starts[0]))


def deepest(texts: Iterable[bytes]) -> int:
    """How deeply arrays and objects nest in any of the JSON ``texts``.

    Parameters
    ----------
    texts : iterable of bytes
        JSON texts (page bodies), each measured on its own.

    Returns
    -------
    int
        The deepest nesting of any text (an upper bound for a broken one): ``{"a": [1]}`` is 2.

    Examples
    --------
    >>> deepest([b'{"a": [1]}', b'["]]", [[]]]'])
    3
    """
    structure = b"\n".join(_ESCAPE.sub(b"", text).translate(None, _NOT_STRUCTURE) for text in texts)
    data = np.frombuffer(structure, dtype=np.uint8)
    if not len(data):
        return 0
    quotes = np.cumsum(data == _QUOTE, dtype=np.int32)
    breaks = np.flatnonzero(data == _NEWLINE)
    if (quotes[breaks] & 1).any():
        # A body with an odd number of quotes: restart the parity at each body, so that it
        # cannot hide the brackets of the next one.
        index = np.arange(len(data))
        start = np.maximum.accumulate(np.where(data == _NEWLINE, index, 0))
        quotes = quotes - np.where(data[start] == _NEWLINE, quotes[start], 0)
    steps = _STEP.take(data)
    steps[(quotes & 1) == 1] = 0  # brackets inside strings
    depth = np.cumsum(steps, dtype=np.int32)
    if depth.min() >= 0:
        return int(depth.max())
    # Stray closing brackets: the rise above the lowest point so far is the depth of a
    # well-formed body and more, never less, for a broken one.
    return int((depth - np.minimum.accumulate(np.minimum(depth, 0))).max())


def value_depth(value: object, limit: int = MAX_EXTRA_DEPTH) -> int:
    """How deeply lists and dicts nest in a decoded value (a scalar is 0), without recursion.

    Stops counting past ``limit``: the answer is then ``limit + 1``.

    Examples
    --------
    >>> value_depth({"a": [1, {"b": []}]})
    4
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
