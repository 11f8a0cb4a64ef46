"""HTTP to the Mihu API: every request's settings, retries and failures in one place.

A :class:`Transport` sends every request a client makes, cached loads and syncs alike, on one
urllib3 pool. It owns, once, each in a module of its own:

- :mod:`~mihu_frames.transport.address`: the address (``https``, or ``http`` to a loopback
  host only while a token is set);
- :mod:`~mihu_frames.transport.connections`: the pool, with the proxy and CA bundle from the
  environment (read once, as requests reads them; never a proxy for a loopback host), every
  wait for headers bounded, renewed in a forked child;
- :mod:`~mihu_frames.transport.retrying`: retries with urllib3's :class:`~urllib3.util.Retry`
  (429 honouring ``Retry-After``, 500, 502, 503, 504, dropped connections, timeouts), driven
  by hand so that every attempt passes the client's :class:`~mihu_frames.pacing.Pacer` and is
  logged through the library's logger;
- :mod:`~mihu_frames.transport.reading`: one attempt, with redirect refusal (a redirect could
  carry the token elsewhere: a 3xx is an error), ``timeout`` for each whole response
  (connecting and every read together: a server sending a byte a second is cut off),
  ``max_page_bytes`` for its decoded size (counted while it is read, so a compressed bomb never
  inflates in memory), and a load's ``deadline``;
- :mod:`~mihu_frames.transport.failures`: failures as the typed errors of
  :mod:`mihu_frames.errors`, naming the conversation and page;
- :mod:`~mihu_frames.transport.scrubbing`: the token, never in a message, a log line, a repr
  or a stored header;
- :mod:`~mihu_frames.transport.sending`: the :class:`Transport` that puts them together, with
  the request headers (``Accept``, ``Accept-Encoding``, ``User-Agent``, ``Authorization``);
- :mod:`~mihu_frames.transport.reply`: :class:`Where` a request is for, the :class:`Reply`.

Nothing here caches, decodes or knows about pages beyond the URL it is given.
"""

from mihu_frames.transport.address import is_loopback, resolve_base_url
from mihu_frames.transport.reply import Reply, Where
from mihu_frames.transport.retrying import CONNECT_RETRIES, RETRY_AFTER_MAX, RETRY_STATUSES
from mihu_frames.transport.scrubbing import MIN_SECRET
from mihu_frames.transport.sending import Transport

__all__ = [
    "CONNECT_RETRIES",
    "MIN_SECRET",
    "RETRY_AFTER_MAX",
    "RETRY_STATUSES",
    "Reply",
    "Transport",
    "Where",
    "is_loopback",
    "resolve_base_url",
]
