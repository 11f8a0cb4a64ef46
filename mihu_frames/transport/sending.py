"""The :class:`Transport`: one GET to the API, its parts (see the package) put together."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import urllib3

from mihu_frames._dates import served_at
from mihu_frames._version import __version__
from mihu_frames.errors import MihuError
from mihu_frames.pacing import Pacer
from mihu_frames.transport.address import refuse_plain_http
from mihu_frames.transport.connections import Connections
from mihu_frames.transport.failures import Failures
from mihu_frames.transport.reading import Reader
from mihu_frames.transport.reply import Reply, Where
from mihu_frames.transport.retrying import Retrying
from mihu_frames.transport.scrubbing import Scrubber


class Transport:
    """Sends GET requests to one API address with the client's settings; see the package.

    Parameters
    ----------
    base_url : str
        The resolved address (see :func:`~mihu_frames.transport.resolve_base_url`).
    token : str or None
        The bearer token; it lives in one header dict and in the scrubber, nowhere else.
    max_workers : int
        Connections kept to the server (the page runner's threads).
    timeout : float
        Seconds for each whole response: connecting and every read together.
    retries : int
        Retries per request for 429, 5xx, dropped connections and timeouts.
    backoff_factor : float
        urllib3's backoff between retries that carry no ``Retry-After``.
    max_page_bytes : int
        The largest decoded body accepted.
    pacer : Pacer
        Paces every attempt by the server's signals (shared by all threads of a client).
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        max_workers: int,
        timeout: float,
        retries: int,
        backoff_factor: float,
        max_page_bytes: int,
        pacer: Pacer,
    ) -> None:
        refuse_plain_http(base_url, bool(token))
        self.base_url = base_url
        self.timeout = float(timeout)
        self.retries = retries
        self.max_page_bytes = max_page_bytes
        self.pacer = pacer
        self._has_token = bool(token)
        self._scrubber = Scrubber(token)
        self.headers = {
            "Accept": "application/json",
            "Accept-Encoding": urllib3.util.make_headers(accept_encoding=True)["accept-encoding"],
            "User-Agent": f"mihu_frames/{__version__}",
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._failures = Failures(base_url, self.timeout, self._scrubber)
        self._retrying = Retrying(retries, backoff_factor, self._failures, self._scrubber)
        self._connections = Connections(base_url, max(max_workers, 2))
        self._reader = Reader(self._connections, self.timeout, max_page_bytes)

    def __repr__(self) -> str:
        token = "set" if self._has_token else "none"
        return f"Transport(base_url={self.base_url!r}, token={token})"

    def close(self) -> None:
        """Close the pool's connections."""
        self._connections.clear()

    def get(self, url: str, where: Where, *, deadline: float | None = None) -> Reply:
        """GET ``url``; return its 200 response or raise the typed error of its failure.

        Parameters
        ----------
        url : str
            The whole URL, query included.
        where : Where
            The conversation and page, for errors and logs.
        deadline : float, optional
            A ``time.monotonic()`` instant by which the whole request, retries included, must
            be done (:class:`~mihu_frames.errors.DeadlineExceededError` otherwise).
        """
        attempts = self._retrying.start(self.pacer, url, where, deadline)
        response, body = attempts.run(
            partial(self._reader.fetch, url, self.headers, deadline, where)
        )
        body = self.scrub_body(body)
        if response.status != 200:
            raise self.error_for(
                response.status, body, response.reason, where, attempts.retries, url=url
            )
        return Reply(
            url=url,
            status=response.status,
            reason=self.scrub(response.reason or ""),
            headers=dict(response.headers.items()),
            body=body,
            retries=attempts.retries,
            served_at=served_at(response.headers.get("Date")),
        )

    def error_for(
        self,
        status: int,
        body: bytes,
        reason: str | None,
        where: Where,
        retries: int = 0,
        *,
        url: str | None = None,
    ) -> MihuError:
        """The typed error of a non-200 response, with the server's (scrubbed) message and the
        number of retries it came after; a 404 names the ``url`` it answered."""
        return self._failures.for_status(status, body, reason, where, retries, url=url)

    # ------------------------------------------------------------------ the token

    def scrub(self, text: str) -> str:
        """``text`` with the token (bare, or after ``Bearer``) replaced by ``***``."""
        return self._scrubber.scrub(text)

    def scrub_body(self, body: bytes) -> bytes:
        """``body`` with the token replaced by ``***`` wherever the server echoed it, in any
        JSON spelling (see :class:`~mihu_frames.transport.scrubbing.Scrubber`)."""
        return self._scrubber.scrub_body(body)

    def holds_secret(self, value: str | bytes) -> bool:
        """Whether ``value`` contains the token."""
        return self._scrubber.holds_secret(value)

    def storable_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The response headers worth storing with a decoded body: none that repeats the token,
        none about the transfer encoding."""
        return self._scrubber.storable_headers(headers)
