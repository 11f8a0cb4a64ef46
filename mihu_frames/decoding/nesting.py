"""How deeply JSON nests in raw bytes, measured before any parser sees them.

pyarrow's JSON reader recurses into nested values: at 2,000-6,000 levels it stalls for seconds
and at 20,000 it crashes the interpreter (a segfault, not an exception). A server can send that
in any field. So every batch of bodies is measured first, without parsing, and a body nested
deeper than a documented page can be never reaches the reader: it is decoded with
``json.loads`` instead, which refuses deep nesting with an exception (and the decoder turns
that, or undocumented values nested deeper than ``MAX_EXTRA_DEPTH``, into a
:class:`~mihu_frames.errors.ResponseFormatError`).

The measurement is vectorised over the batch's bytes (numpy): brackets count only outside
strings, a string is the text between two unescaped quotes, and a quote is escaped when an odd
run of backslashes precedes it. It trusts nothing else about the bytes; for text that is not
JSON the depth may be wrong, but then neither parser accepts the body.
"""

from __future__ import annotations

import numpy as np

#: The deepest an undocumented value may nest (its own arrays and objects): deeper is refused.
MAX_EXTRA_DEPTH = 64

_QUOTE, _BACKSLASH = 0x22, 0x5C
_OPEN = (0x7B, 0x5B)  # { [
_CLOSE = (0x7D, 0x5D)  # } ]
#: ``byte & _MASK == _MASKED`` holds for the four brackets (and for Y, _, y and DEL, which
#: the exact comparison that follows drops): one cheap pass instead of four.
_MASK, _MASKED = 0xD9, 0x59


def max_depth(buffer: bytes, ends: np.ndarray) -> np.ndarray:
    """The deepest nesting of arrays and objects in each JSON text of ``buffer``.

    Parameters
    ----------
    buffer : bytes
        The texts one after another (separators between them must not be brackets or quotes).
    ends : numpy.ndarray
        The offset in ``buffer`` where each text ends (exclusive), ascending.

    Returns
    -------
    numpy.ndarray
        One depth per text: ``{"a": [1]}`` is 2.

    Examples
    --------
    >>> import numpy as np
    >>> max_depth(b'{"a": [1]} ["]]", [[]]]', np.array([10, 23])).tolist()
    [2, 3]
    """
    data = np.frombuffer(buffer, dtype=np.uint8)
    quotes = np.flatnonzero(data == _QUOTE)
    escaped = _escaped_quotes(data)
    if len(escaped):
        quotes = quotes[~np.isin(quotes, escaped)]
    candidates = np.flatnonzero((data & _MASK) == _MASKED)
    kinds = data[candidates]
    opening = (kinds == _OPEN[0]) | (kinds == _OPEN[1])
    bracket = opening | (kinds == _CLOSE[0]) | (kinds == _CLOSE[1])
    positions, opening = candidates[bracket], opening[bracket]
    # A bracket is inside a string when an odd number of real quotes precede it.
    outside = (np.searchsorted(quotes, positions) & 1) == 0
    positions, opening = positions[outside], opening[outside]
    depth = np.cumsum(np.where(opening, 1, -1))
    text = np.searchsorted(ends, positions, side="right")
    deepest = np.zeros(len(ends), dtype=np.int64)
    if len(depth):
        # Depth relative to where each text starts (a broken text may not return to 0).
        before = np.r_[0, depth[:-1]]
        start = np.r_[True, text[1:] != text[:-1]]
        base = np.maximum.accumulate(np.where(start, np.arange(len(depth)), 0))
        relative = depth - before[base]
        np.maximum.at(deepest, text, relative)
    return deepest


def value_depth(value: object, limit: int = MAX_EXTRA_DEPTH) -> int:
    """How deeply lists and dicts nest in a decoded value (a scalar is 0), without recursion.

    Stops counting past ``limit``: the answer is then ``limit + 1``.

    Examples
    --------
    >>> value_depth({"a": [1, {"b": []}]})
    3
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


def _escaped_quotes(data: np.ndarray) -> np.ndarray:
    """Positions of quotes preceded by an odd run of backslashes."""
    slashes = np.flatnonzero(data == _BACKSLASH)
    if not len(slashes):
        return slashes
    starts = np.r_[True, np.diff(slashes) != 1]
    first = slashes[starts]
    last = np.r_[slashes[np.flatnonzero(starts)[1:] - 1], slashes[-1]]
    after = last + 1
    odd = ((last - first + 1) & 1) == 1
    after = after[odd & (after < len(data))]
    return after[data[after] == _QUOTE]
