"""One attempt: the request sent and its whole body read, within its time and its size.

``timeout`` bounds each whole response (connecting, the headers and every read together: a
server sending a byte a second is cut off), a load's ``deadline`` bounds it too, and
``max_page_bytes`` bounds the decoded body, counted while it is read, so a compressed bomb
never inflates in memory. Redirects are never followed: urllib3 hands a 3xx back as it came.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

import urllib3
from urllib3.exceptions import DecodeError, ReadTimeoutError

from mihu_frames.transport.connections import Connections
from mihu_frames.transport.failures import Failures
from mihu_frames.transport.reply import Where

_CHUNK = 256 * 1024


class DeadlineHit(OSError):
    """The load's deadline passed while a response was being read."""


class Reader:
    """Sends one GET through ``connections`` and reads its decoded body against the clock.

    Parameters
    ----------
    connections : Connections
        The pool to send through.
    timeout : float
        Seconds for each whole response.
    max_page_bytes : int
        The largest decoded body accepted.
    """

    def __init__(self, connections: Connections, timeout: float, max_page_bytes: int) -> None:
        self.connections = connections
        self.timeout = timeout
        self.max_page_bytes = max_page_bytes

    def fetch(
        self, url: str, headers: Mapping[str, str], deadline: float | None, where: Where
    ) -> tuple[urllib3.BaseHTTPResponse, bytes]:
        """The response to one attempt (its connection back in the pool) and its whole body.

        Raises
        ------
        urllib3.exceptions.HTTPError, OSError
            No whole response: for the retry to judge (:class:`DeadlineHit` when the
            ``deadline`` cut it off).
        ResponseFormatError
            The body is larger than ``max_page_bytes``, or not in its ``Content-Encoding``.
        """
        try:
            return self._fetch(url, headers, deadline, where)
        except DecodeError:
            raise Failures.undecodable(where) from None

    def _fetch(
        self, url: str, headers: Mapping[str, str], deadline: float | None, where: Where
    ) -> tuple[urllib3.BaseHTTPResponse, bytes]:
        started = time.monotonic()
        ends = started + self.timeout
        if deadline is not None:
            ends = min(ends, deadline)
        wait = max(ends - started, 0.001)
        response = self.connections.pool.urlopen(
            "GET",
            url,
            headers=headers,
            retries=False,
            redirect=False,
            preload_content=False,
            decode_content=True,
            # ``total``: the headers get what connecting left of it (see connections._Watchdog).
            timeout=urllib3.Timeout(total=wait),
        )
        try:
            return response, self._read(response, url, ends, deadline, where)
        finally:
            response.release_conn()

    def _read(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        ends: float,
        deadline: float | None,
        where: Where,
    ) -> bytes:
        """The decoded body, read chunk by chunk against the size cap and the clock."""
        chunks: list[bytes] = []
        size = 0
        sock = getattr(getattr(response, "connection", None), "sock", None)
        while True:
            remaining = ends - time.monotonic()
            if remaining <= 0:
                response.close()  # never back to the pool half-read
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineHit()
                message = f"no whole response within {self.timeout:g} s"
                raise ReadTimeoutError(None, url, message)  # type: ignore[arg-type]
            if sock is not None:  # each read waits at most what is left of the response's time
                with contextlib.suppress(OSError):
                    sock.settimeout(remaining)
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_page_bytes:
                response.close()
                raise Failures.too_large(self.max_page_bytes, where)
            chunks.append(chunk)
