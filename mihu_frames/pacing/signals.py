"""What a response says about the server's limit: its headers read, and a 429's end worked out.

``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` are integers (a bad value is no value);
``Retry-After`` is a number of seconds or an HTTP date.

When a 429 ends (:func:`refusal_end`). ``Retry-After`` is rounded up to whole seconds from when
the 429 was made, ``X-RateLimit-Reset`` to a whole second of the server's clock: both are
bounds of the same instant with independent rounding, so the hold ends at the earlier of the
two, and the window ended after the later of (each minus a second). ``Reset`` is used only
when it agrees with ``Retry-After`` (a server clock a second or more behind ours is ignored).
No hold is longer than :data:`MAX_HOLD`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping

#: The longest hold a 429 can put on the client (the transport's ``RETRY_AFTER_MAX``).
MAX_HOLD = 60.0
#: A server clock this far behind ours makes its ``X-RateLimit-Reset`` unusable (seconds).
CLOCK_TOLERANCE = 0.25


def int_header(headers: Mapping[str, str], name: str) -> int | None:
    """The integer value of header ``name``; None when it is missing or not an integer.

    Examples
    --------
    >>> int_header({"X-RateLimit-Limit": " 60"}, "X-RateLimit-Limit")
    60
    """
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def retry_after(value: str | None, wall: float) -> float | None:
    """Seconds a ``Retry-After`` value says (a number of seconds, or an HTTP date).

    Parameters
    ----------
    value : str, optional
        The header's value.
    wall : float
        Unix time now, for an HTTP date.

    Examples
    --------
    >>> retry_after("2", wall=0.0)
    2.0
    >>> retry_after("Thu, 01 Jan 1970 00:00:10 GMT", wall=4.0)
    6.0
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall)


def refusal_end(
    sent: float, now: float, retry_after: float | None, reset_at: float | None
) -> tuple[float, float]:
    """When a 429's hold ends, and the earliest the server's window can end (see the module).

    Parameters
    ----------
    sent, now : float
        When the refused request was sent, and when the 429 arrived (monotonic seconds).
    retry_after : float, optional
        Its ``Retry-After`` in seconds.
    reset_at : float, optional
        Its ``X-RateLimit-Reset`` as a monotonic instant (by the local clock).

    Returns
    -------
    tuple of float
        The end of the hold (at most :data:`MAX_HOLD` from ``now``), and the instant after
        which the window ended.

    Examples
    --------
    >>> refusal_end(sent=10.0, now=10.1, retry_after=2.0, reset_at=11.6)
    (11.6, 11.0)
    """
    until = now + (retry_after or 0.0)
    # The window ends after the 429 was made, so after sent (and sent + Retry-After - 1).
    earliest = sent + max((retry_after or 0.0) - 1.0, 0.0)
    if reset_at is not None:
        # Both are rounded up to whole seconds: take the earlier. A Reset before the
        # earliest end comes from a server clock behind ours.
        if retry_after is None:
            until = max(reset_at, now)
        elif reset_at >= earliest - CLOCK_TOLERANCE:
            until = min(until, max(reset_at, now))
            earliest = max(earliest, reset_at - 1.0)
    return min(until, now + MAX_HOLD), earliest
