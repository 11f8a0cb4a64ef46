"""HTTP to the Mihu API: every request's settings, retries and failures in one place.

A :class:`Transport` sends every request a client makes, cached loads and syncs alike, on one
urllib3 pool. It owns, once:

- the address (``https``, or ``http`` to a loopback host only while a token is set), the
  headers (``Accept``, ``Accept-Encoding``, ``User-Agent``, ``Authorization``), the proxy and
  CA bundle from the environment (read once, as requests reads them);
- retries with urllib3's :class:`~urllib3.util.Retry` (429 honouring ``Retry-After``, 500, 502,
  503, 504, dropped connections, timeouts), driven here so that every attempt passes the
  client's :class:`~mihu_frames.pacing.Pacer` and is logged through the library's logger;
- redirect refusal (a redirect could carry the token elsewhere: a 3xx is an error);
- bounds: ``timeout`` for each whole response (connecting and every read together: a server
  sending a byte a second is cut off), ``max_page_bytes`` for its decoded size (counted while
  it is read, so a compressed bomb never inflates in memory), and a load's ``deadline``;
- failures as the typed errors of :mod:`mihu_frames.errors`, naming the conversation and page;
- the token: never in a message, a log line, a repr or a stored header (:meth:`Transport.scrub`).

Nothing here caches, decodes or knows about pages beyond the URL it is given.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    DecodeError,
    HTTPError,
    InvalidHeader,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from mihu_frames import _spelling as spelling
from mihu_frames._dates import served_at
from mihu_frames._forking import renew_after_fork
from mihu_frames._version import __version__
from mihu_frames.errors import (
    AuthenticationError,
    ConnectionError,
    DeadlineExceededError,
    MihuError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ResponseTimeoutError,
    ServerError,
    ValidationError,
)
from mihu_frames.pacing import Pacer

logger = logging.getLogger("mihu_frames")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: A server's Retry-After is honoured up to a minute, so a load cannot sleep for hours; after
#: the retries it becomes a RateLimitError.
RETRY_AFTER_MAX = 60
#: Connecting is retried at most this often: a refused connection or an unknown host is rarely
#: cured within seconds, and a wrong address should say so quickly.
CONNECT_RETRIES = 2
#: Tokens this long or longer are scrubbed from everything a server sends.
MIN_SECRET = 8
_CHUNK = 256 * 1024
#: Response headers never stored with a page: the body is stored decoded.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


@dataclass(frozen=True)
class Where:
    """What a request is for, so that every error can say which conversation and page failed."""

    conversation: str | None = None
    page: int | None = None


@dataclass(frozen=True)
class Reply:
    """A whole response with status 200: its body (decoded) and what is known of it."""

    url: str
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    retries: int
    #: When the server produced it: its ``Date`` header (the clock of the sessions' timestamps).
    served_at: datetime


def resolve_base_url(base_url: str | None, subdomain: str | None) -> str:
    """Base URL from the arguments or ``MIHU_BASE_URL`` / ``MIHU_SUBDOMAIN``.

    A trailing ``/api/v1`` (as in the API's documentation examples) is accepted and dropped.
    """
    if base_url and subdomain:
        raise ValueError("pass base_url or subdomain, not both")
    if not base_url and not subdomain:
        base_url = os.environ.get("MIHU_BASE_URL") or None
        subdomain = os.environ.get("MIHU_SUBDOMAIN") or None
    if subdomain:
        if not isinstance(subdomain, str) or not re.fullmatch(
            r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", subdomain
        ):
            raise ValueError(f"not a valid subdomain: {subdomain!r}")
        return f"https://{subdomain.lower()}.mihu.ai"
    if not base_url:
        raise ValueError(
            "no API address: pass base_url= or subdomain=, or set MIHU_BASE_URL or MIHU_SUBDOMAIN"
        )
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a string, got {type(base_url).__name__}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    # Scheme and host in lower case (as requests spells them), so one server has one spelling.
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return f"{parts.scheme}://{parts.netloc.lower()}{path}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Transport:
    """Sends GET requests to one API address with the client's settings; see the module.

    Parameters
    ----------
    base_url : str
        The resolved address (see :func:`resolve_base_url`).
    token : str or None
        The bearer token; it lives in one header dict and in :meth:`scrub`, nowhere else.
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
        parts = urlsplit(base_url)
        if token and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"refusing to send the API token over plain http to {parts.hostname}; use https"
            )
        self.base_url = base_url
        self.timeout = float(timeout)
        self.retries = retries
        self.max_page_bytes = max_page_bytes
        self.pacer = pacer
        # What to scrub from server text. A token shorter than MIN_SECRET is no real API
        # token (Mihu's are dozens of characters), and scrubbing "t" would garble every body.
        secret = token if token and len(token) >= MIN_SECRET else None
        self._has_token = bool(token)
        self._secrets = (f"Bearer {secret}", secret) if secret else ()
        # A body spells it in JSON: as is, or with some characters as escapes. Either its bytes
        # or an escape of one of its characters is then in the body (a cheap first test);
        # only then is every spelling, after ``Bearer`` or bare, replaced.
        self._literal = secret.encode() if secret else b""
        self._escaped = re.compile(spelling.escapes(secret).encode()) if secret else None
        self._any_spelling = (
            re.compile(f"(?:{spelling.spelled('Bearer ')})?{spelling.spelled(secret)}".encode())
            if secret
            else None
        )
        self.headers = {
            "Accept": "application/json",
            "Accept-Encoding": urllib3.util.make_headers(accept_encoding=True)["accept-encoding"],
            "User-Agent": f"mihu_frames/{__version__}",
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._retry = Retry(
            total=retries,
            connect=min(retries, CONNECT_RETRIES),
            read=retries,
            status=retries,
            other=0,
            redirect=0,
            backoff_factor=backoff_factor,
            backoff_max=60,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
            retry_after_max=RETRY_AFTER_MAX,
        )
        self._maxsize = max(max_workers, 2)
        self._pool = _bounded(_pool_manager(base_url, self._maxsize))
        renew_after_fork(self)

    def __repr__(self) -> str:
        token = "set" if self._has_token else "none"
        return f"Transport(base_url={self.base_url!r}, token={token})"

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.clear()

    def _after_fork(self) -> None:
        # The parent's pooled sockets are the parent's: reading them here would take its
        # responses. Drop them unclosed (closing is the parent's business) and start anew.
        self._pool = _bounded(_pool_manager(self.base_url, self._maxsize))

    # ------------------------------------------------------------------ the token

    def scrub(self, text: str) -> str:
        """``text`` with the token (bare, or after ``Bearer``) replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def scrub_body(self, body: bytes) -> bytes:
        """``body`` with the token replaced by ``***`` wherever the server echoed it: bare,
        after ``Bearer``, and in any JSON spelling (Laravel escapes ``/`` as ``\\/``; a
        server may write any character as a ``\\u`` escape)."""
        if self._escaped is None or self._any_spelling is None:
            return body
        if self._literal in body or self._escaped.search(body):
            body = self._any_spelling.sub(b"***", body)
        return body

    def holds_secret(self, value: str | bytes) -> bool:
        """Whether ``value`` contains the token."""
        if not self._secrets:
            return False
        token = self._secrets[1]
        return token in value if isinstance(value, str) else token.encode() in value

    def storable_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The response headers worth storing with a decoded body: none that repeats the token,
        none about the transfer encoding."""
        return {
            name: value
            for name, value in headers.items()
            if name.lower() not in _TRANSFER_HEADERS and not self.holds_secret(value)
        }

    # ------------------------------------------------------------------ one request

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
        retry = self._retry
        not_before = 0.0  # after a 429: when the pacer lets this request go again
        while True:
            ticket = self.pacer.acquire(deadline, not_before)
            status: int | None = None
            headers: Mapping[str, str] = {}
            failure: Exception | None = None
            try:
                self._check_deadline(deadline, where)
                response, body = self._attempt(url, deadline, where)
                status, headers = response.status, response.headers
            except DecodeError:
                raise ResponseFormatError(
                    "the response body could not be decompressed "
                    "(its Content-Encoding does not match its bytes)",
                    conversation=where.conversation,
                    page=where.page,
                ) from None
            except (HTTPError, OSError) as exc:
                if isinstance(exc, _DeadlineHit) or _passed(deadline):
                    raise self._deadline_error(where) from None
                failure = exc
            finally:
                self.pacer.release(ticket, status, headers)
            if status is None:  # failed; wait with the pacer's ticket given back
                assert failure is not None
                retry = self._next_try(retry, url, where, error=failure)
                self._sleep(retry, None, deadline, where)
                continue
            body = self.scrub_body(body)
            if retry.is_retry("GET", status, has_retry_after="Retry-After" in headers):
                try:
                    retry = retry.increment("GET", url, response=response)
                except MaxRetryError:
                    pass  # out of retries: the last answer is the answer
                else:
                    self._log_retry(retry, where, f"HTTP {status}")
                    if status == 429:
                        # The pacer decides who waits: this request, or the whole client.
                        not_before = self.pacer.hold(self._wait(retry, response), ticket)
                    else:
                        self._sleep(retry, response, deadline, where)
                    continue
            if status != 200:
                raise self.error_for(
                    status, body, response.reason, where, len(retry.history), url=url
                )
            return Reply(
                url=url,
                status=status,
                reason=self.scrub(response.reason or ""),
                headers=dict(headers.items()),
                body=body,
                retries=len(retry.history),
                served_at=served_at(headers.get("Date")),
            )

    def _attempt(
        self, url: str, deadline: float | None, where: Where
    ) -> tuple[urllib3.BaseHTTPResponse, bytes]:
        started = time.monotonic()
        ends = started + self.timeout
        if deadline is not None:
            ends = min(ends, deadline)
        wait = max(ends - started, 0.001)
        response = self._pool.urlopen(
            "GET",
            url,
            headers=self.headers,
            retries=False,
            redirect=False,
            preload_content=False,
            decode_content=True,
            # ``total``: the headers get what connecting left of it (see _Watchdog).
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
                    raise _DeadlineHit()
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
                raise ResponseFormatError(
                    f"the response is larger than max_page_bytes={self.max_page_bytes:,} bytes "
                    f"(decoded; a page of 100 sessions is about 100 KB)",
                    conversation=where.conversation,
                    page=where.page,
                )
            chunks.append(chunk)

    def _next_try(self, retry: Retry, url: str, where: Where, *, error: Exception) -> Retry:
        """Count a failed attempt; raise the typed error once the retries are spent."""
        try:
            if isinstance(error, NameResolutionError):  # an unknown host does not come back
                raise MaxRetryError(None, url, error)  # type: ignore[arg-type]
            retry = retry.increment("GET", url, error=error)
        except MaxRetryError as exc:
            raise self._connection_failure(exc.reason or error, url, where, retry) from None
        except (HTTPError, OSError) as exc:  # not retryable at all (``other=0``)
            raise self._connection_failure(exc, url, where, retry) from None
        self._log_retry(retry, where, _describe(error))
        return retry

    def _sleep(
        self,
        retry: Retry,
        response: urllib3.BaseHTTPResponse | None,
        deadline: float | None,
        where: Where,
    ) -> None:
        wait = self._wait(retry, response)
        if deadline is not None and time.monotonic() + wait > deadline:
            raise self._deadline_error(where)
        if wait > 0:
            time.sleep(wait)

    @staticmethod
    def _wait(retry: Retry, response: urllib3.BaseHTTPResponse | None) -> float:
        """Seconds before the next attempt: the answer's Retry-After, else the back-off."""
        wait = None
        if response is not None:
            with contextlib.suppress(InvalidHeader):  # "Retry-After: soon": back off instead
                wait = retry.get_retry_after(response)
        return retry.get_backoff_time() if wait is None else wait

    def _log_retry(self, retry: Retry, where: Where, cause: str) -> None:
        logger.info(
            "retrying %s (%s); retry %d of %d",
            _where_text(where),
            self.scrub(cause),
            len(retry.history),
            self.retries,
        )

    def _check_deadline(self, deadline: float | None, where: Where) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise self._deadline_error(where)

    def _deadline_error(self, where: Where) -> DeadlineExceededError:
        return DeadlineExceededError(
            "the load's deadline passed before this page arrived",
            conversation=where.conversation,
            page=where.page,
        )

    # ------------------------------------------------------------------ failures

    def _connection_failure(
        self, error: BaseException, url: str, where: Where, retry: Retry
    ) -> MihuError:
        tries = len(retry.history) + 1
        kw: dict[str, Any] = {"conversation": where.conversation, "page": where.page}
        if isinstance(error, ReadTimeoutError):
            return ResponseTimeoutError(
                f"no whole response within timeout={self.timeout:g} s "
                f"({tries} attempt{'s' * (tries > 1)})",
                **kw,
            )
        if isinstance(error, ProtocolError):
            return ServerError(
                f"the server dropped the connection ({_describe(error)}; "
                f"{tries} attempt{'s' * (tries > 1)})",
                **kw,
            )
        address = url.split("?", 1)[0]
        reason = self.scrub(_describe(error))
        if isinstance(error, NewConnectionError):
            reason = "unknown host" if isinstance(error, NameResolutionError) else reason
        return ConnectionError(
            f"no answer from {address} ({reason}; {tries} attempt{'s' * (tries > 1)}). Check the "
            "address: base_url= or subdomain=, or MIHU_BASE_URL / MIHU_SUBDOMAIN",
            url=address,
            **kw,
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
        payload = _json_or_none(body)
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str) or not message:
            message = _plain_text(body, reason)
        message = self.scrub(message)
        kw: dict[str, Any] = {
            "conversation": where.conversation,
            "page": where.page,
            "status_code": status,
        }
        if status in (401, 403):
            return AuthenticationError(f"{message} (check MIHU_API_TOKEN or token=)", **kw)
        if status == 404:
            return self._not_found(message, payload, url, kw)
        if status == 422:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            clean = (
                {
                    self.scrub(str(k)): [
                        self.scrub(str(m)) for m in (v if isinstance(v, list) else [v])
                    ]
                    for k, v in errors.items()
                }
                if isinstance(errors, dict)
                else {}
            )
            return ValidationError(message, errors=clean, **kw)
        after = f"after {retries} retr{'y' if retries == 1 else 'ies'}"
        if status == 429:
            return RateLimitError(f"{message} (still rate limited {after})", **kw)
        if status >= 500:
            return ServerError(f"{message} ({after})", **kw)
        if 300 <= status < 400:
            return MihuError(
                f"{message} (a redirect: not followed, it could carry the token elsewhere)", **kw
            )
        return MihuError(message, **kw)

    def _not_found(
        self, message: str, payload: Any, url: str | None, kw: dict[str, Any]
    ) -> NotFoundError:
        """A 404 that names the address it answered, and says when the address, not the
        conversation, looks wrong: the answer is not the API's error envelope (no API route
        there: a web server's or a framework's page), or the base URL carries a path of its
        own (the API's routes start at the host's root)."""
        address = self.scrub(url.split("?", 1)[0]) if url else None
        tried = f"GET {address}" if address else "the request"
        check = "Check the address: base_url= or subdomain=, or MIHU_BASE_URL / MIHU_SUBDOMAIN"
        if not _is_error_envelope(payload):
            return NotFoundError(
                f"no API route at {address or 'this address'} ({message!r} is not the API's "
                f"JSON answer): the address looks wrong, rather than the conversation "
                f"missing. {check}",
                url=address,
                **kw,
            )
        prefix = urlsplit(self.base_url).path
        if prefix:
            return NotFoundError(
                f"{message} ({tried}). The base URL has a path of its own, {prefix!r}, and "
                "the API's routes start at the host's root (https://SUBDOMAIN.mihu.ai): "
                f"if the conversation exists, the address looks wrong. {check}",
                url=address,
                **kw,
            )
        return NotFoundError(f"{message} ({tried})", url=address, **kw)


def _is_error_envelope(payload: Any) -> bool:
    """Whether a decoded body is the API's error envelope: ``{"success": false, "message":
    ...}`` (a route the API does not have is answered by a web server's page, or by the
    framework's bare ``{"message": ...}``)."""
    return (
        isinstance(payload, dict)
        and payload.get("success") is False
        and isinstance(payload.get("message"), str)
    )


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class _DeadlineHit(OSError):
    """The load's deadline passed while a response was being read."""


@dataclass
class _Watch:
    deadline: float
    sock: Any
    done: bool = False
    expired: bool = False


class _Watchdog:
    """Cuts off a response whose status line and headers do not arrive in time.

    http.client reads them with the socket's timeout applied to each ``recv``, so a server
    sending a byte a second is never timed out. Every transport's connections register here
    while they wait for headers; one thread per process (started on first use, a daemon: it
    only ever waits) shuts a socket down at its deadline, which ends the blocked read.
    """

    def __init__(self) -> None:
        self._after_fork()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        # A child has none of its parent's threads, and the condition may be held by one.
        self._cond = threading.Condition()
        self._watches: list[_Watch] = []
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread looks next, unless woken

    def watch(self, deadline: float, sock: Any) -> _Watch:
        entry = _Watch(deadline, sock)
        with self._cond:
            self._watches.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mihu-watchdog", daemon=True)
                self._thread.start()
            if deadline < self._wakes_at:  # else it looks in time anyway: no thread switch
                self._wakes_at = deadline
                self._cond.notify()
        return entry

    def release(self, entry: _Watch) -> None:
        with self._cond:
            entry.done = True
            self._watches = [w for w in self._watches if not w.done]

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for entry in self._watches:
                    if not entry.done and entry.deadline <= now:
                        entry.expired = entry.done = True
                        with contextlib.suppress(OSError):
                            entry.sock.shutdown(socket.SHUT_RDWR)
                self._watches = [w for w in self._watches if not w.done]
                self._wakes_at = min((w.deadline for w in self._watches), default=now + 60)
                self._cond.wait(max(self._wakes_at - now, 0.001))


_WATCHDOG = _Watchdog()


def _watched(base: type[Any]) -> type:
    """``base`` (a urllib3 connection class) whose wait for headers is bounded by its timeout."""

    def getresponse(self: Any) -> Any:
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        if timeout is None or self.sock is None:
            return base.getresponse(self)
        entry = _WATCHDOG.watch(time.monotonic() + timeout, self.sock)
        try:
            return base.getresponse(self)
        except Exception:
            if entry.expired:  # urllib3 makes this a ReadTimeoutError
                raise TimeoutError("no status line and headers in time") from None
            raise
        finally:
            _WATCHDOG.release(entry)

    return type(f"Watched{base.__name__}", (base,), {"getresponse": getresponse})


def _bounded(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """``manager`` whose pools make connections that bound their wait for headers (its own
    pool classes, so a SOCKS proxy's connections stay SOCKS connections)."""
    manager.pool_classes_by_scheme = {
        scheme: _watched_pool(pool) for scheme, pool in manager.pool_classes_by_scheme.items()
    }
    return manager


@functools.cache
def _watched_pool(pool: type[Any]) -> type:
    return type(f"Watched{pool.__name__}", (pool,), {"ConnectionCls": _watched(pool.ConnectionCls)})


def _pool_manager(base_url: str, maxsize: int) -> urllib3.PoolManager:
    """A urllib3 pool for ``base_url`` with the environment's proxy and CA bundle, as requests
    would choose them (read once)."""
    import requests.adapters
    import requests.certs
    import requests.utils

    tls: dict[str, Any] = {}
    if base_url.startswith("https:"):
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        tls = {"cert_reqs": "CERT_REQUIRED"}
        if bundle and os.path.isdir(bundle):  # a c_rehash'ed folder, as requests accepts
            tls["ca_cert_dir"] = bundle
        else:
            tls["ca_certs"] = bundle or requests.certs.where()
    # A loopback server is never reached through a proxy: that would carry the token over the
    # network, in the clear when the address is http.
    proxies: dict[str, str] | None = {} if is_loopback(urlsplit(base_url).hostname or "") else None
    if proxies is None:
        proxies = requests.utils.get_environ_proxies(base_url)
    proxy = requests.utils.select_proxy(base_url, proxies)
    if proxy:
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=maxsize)
        return adapter.proxy_manager_for(proxy, **tls)
    return urllib3.PoolManager(num_pools=2, maxsize=maxsize, **tls)


def _where_text(where: Where) -> str:
    parts = []
    if where.conversation:
        parts.append(f"conversation {where.conversation}")
    if where.page is not None:
        parts.append(f"page {where.page}")
    return ", ".join(parts) or "the request"


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _plain_text(body: bytes, reason: str | None) -> str:
    text = body[:4096].decode("utf-8", errors="replace")
    title = re.search(r"<title>(.*?)</title>|<h1>(.*?)</h1>", text, re.I | re.S)
    if title:
        text = title.group(1) or title.group(2)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()
    return (text[:200] or reason or "no message").strip()


def _describe(exc: BaseException) -> str:
    """A one-line cause: the exception's class and its reason's class, never its URL."""
    reason = getattr(exc, "reason", None)
    if reason is None and exc.args:
        reason = getattr(exc.args[0], "reason", None)
    name = type(exc).__name__
    return name + (f": {type(reason).__name__}" if isinstance(reason, BaseException) else "")
