"""Decoding: API bytes (or session dicts) to Arrow tables in the frame's schema.

One module per concern, each stating what it guarantees:

- :mod:`~mihu_frames.decoding.envelope`: the documented envelope and its paginator checks;
- :mod:`~mihu_frames.decoding.nesting`: how deeply a body nests, before any parser sees it;
- :mod:`~mihu_frames.decoding.arrow`: many page bodies at once with pyarrow's JSON reader;
- :mod:`~mihu_frames.decoding.records`: session dicts (``json.loads`` results, a user's own);
- :mod:`~mihu_frames.decoding.extra`: undocumented fields kept exactly as sent;
- :mod:`~mihu_frames.decoding.timestamps`: ISO 8601 text to UTC instants;
- :mod:`~mihu_frames.decoding.batch`: decoded sessions to frame columns, in fetch order.

Nothing here knows HTTP; the frame's columns themselves are built by :mod:`mihu_frames.frame`.
"""

from mihu_frames.decoding.arrow import batch_size, decode_pages
from mihu_frames.decoding.envelope import PageEnvelope, PageInfo, paginator_hint
from mihu_frames.decoding.records import sessions_frame

__all__ = [
    "PageEnvelope",
    "PageInfo",
    "batch_size",
    "decode_pages",
    "paginator_hint",
    "sessions_frame",
]
