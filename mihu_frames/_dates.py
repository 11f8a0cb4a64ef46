"""When the API produced a response: its ``Date`` header.

The ``Date`` header is the server's clock, the same clock as the sessions' timestamps, and a
cached page keeps it, so a page's ``fetched_at`` is the same whether it came fresh or from the
cache.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def served_at(date: str | None, fallback: datetime | None = None) -> datetime:
    """The instant in a ``Date`` header (UTC); else ``fallback``, else now."""
    if date:
        try:
            served = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            served = None
        if served is not None and served.tzinfo is not None:
            return served.astimezone(timezone.utc)
    return fallback if isinstance(fallback, datetime) else datetime.now(timezone.utc)
