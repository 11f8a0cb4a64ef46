"""Failures as the typed errors of :mod:`mihu_frames.errors`: a status, a lost connection, a
deadline. Every error names its conversation and page, and the server's text in it is scrubbed
of the token. A 404 names the URL it answered and says when the address, rather than the
conversation, looks wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import (
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

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
from mihu_frames.transport.reply import Where
from mihu_frames.transport.scrubbing import Scrubber

_CHECK = "Check the address: base_url= or subdomain=, or MIHU_BASE_URL / MIHU_SUBDOMAIN"


class Failures:
    """Makes the typed error of each way a request to ``base_url`` can fail.

    Parameters
    ----------
    base_url : str
        The resolved address (a 404 says when its path looks wrong).
    timeout : float
        Seconds for each whole response (a timeout's message names it).
    scrubber : Scrubber
        Keeps the token out of every message.
    """

    def __init__(self, base_url: str, timeout: float, scrubber: Scrubber) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.scrubber = scrubber

    def for_status(
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
        message = self.scrubber.scrub(message)
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
            return ValidationError(message, errors=self._field_errors(payload), **kw)
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

    def for_connection(self, error: BaseException, url: str, where: Where, tries: int) -> MihuError:
        """The typed error of an attempt that got no whole response, after ``tries`` attempts:
        a timeout, a dropped connection, or no answer from the address at all."""
        kw: dict[str, Any] = {"conversation": where.conversation, "page": where.page}
        attempts = f"{tries} attempt{'s' * (tries > 1)}"
        if isinstance(error, ReadTimeoutError):
            return ResponseTimeoutError(
                f"no whole response within timeout={self.timeout:g} s ({attempts})", **kw
            )
        if isinstance(error, ProtocolError):
            return ServerError(
                f"the server dropped the connection ({describe(error)}; {attempts})", **kw
            )
        address = url.split("?", 1)[0]
        reason = self.scrubber.scrub(describe(error))
        if isinstance(error, NewConnectionError):
            reason = "unknown host" if isinstance(error, NameResolutionError) else reason
        return ConnectionError(
            f"no answer from {address} ({reason}; {attempts}). {_CHECK}", url=address, **kw
        )

    @staticmethod
    def deadline(where: Where) -> DeadlineExceededError:
        """The load's deadline passed before the page arrived."""
        return DeadlineExceededError(
            "the load's deadline passed before this page arrived",
            conversation=where.conversation,
            page=where.page,
        )

    @staticmethod
    def undecodable(where: Where) -> ResponseFormatError:
        """The body's bytes do not match its ``Content-Encoding``."""
        return ResponseFormatError(
            "the response body could not be decompressed "
            "(its Content-Encoding does not match its bytes)",
            conversation=where.conversation,
            page=where.page,
        )

    @staticmethod
    def too_large(max_page_bytes: int, where: Where) -> ResponseFormatError:
        """The decoded body outgrew ``max_page_bytes``."""
        return ResponseFormatError(
            f"the response is larger than max_page_bytes={max_page_bytes:,} bytes "
            f"(decoded; a page of 100 sessions is about 100 KB)",
            conversation=where.conversation,
            page=where.page,
        )

    def _field_errors(self, payload: Any) -> dict[str, list[str]]:
        """A 422's ``errors`` object, every name and message scrubbed, each a list."""
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if not isinstance(errors, dict):
            return {}
        scrub = self.scrubber.scrub
        return {
            scrub(str(k)): [scrub(str(m)) for m in (v if isinstance(v, list) else [v])]
            for k, v in errors.items()
        }

    def _not_found(
        self, message: str, payload: Any, url: str | None, kw: dict[str, Any]
    ) -> NotFoundError:
        """A 404 that names the address it answered, and says when the address, not the
        conversation, looks wrong: the answer is not the API's error envelope (no API route
        there: a web server's or a framework's page), or the base URL carries a path of its
        own (the API's routes start at the host's root)."""
        address = self.scrubber.scrub(url.split("?", 1)[0]) if url else None
        tried = f"GET {address}" if address else "the request"
        if not _is_error_envelope(payload):
            return NotFoundError(
                f"no API route at {address or 'this address'} ({message!r} is not the API's "
                f"JSON answer): the address looks wrong, rather than the conversation "
                f"missing. {_CHECK}",
                url=address,
                **kw,
            )
        prefix = urlsplit(self.base_url).path
        if prefix:
            return NotFoundError(
                f"{message} ({tried}). The base URL has a path of its own, {prefix!r}, and "
                "the API's routes start at the host's root (https://SUBDOMAIN.mihu.ai): "
                f"if the conversation exists, the address looks wrong. {_CHECK}",
                url=address,
                **kw,
            )
        return NotFoundError(f"{message} ({tried})", url=address, **kw)


def describe(exc: BaseException) -> str:
    """A one-line cause: the exception's class and its reason's class, never its URL."""
    reason = getattr(exc, "reason", None)
    if reason is None and exc.args:
        reason = getattr(exc.args[0], "reason", None)
    name = type(exc).__name__
    return name + (f": {type(reason).__name__}" if isinstance(reason, BaseException) else "")


def _is_error_envelope(payload: Any) -> bool:
    """Whether a decoded body is the API's error envelope: ``{"success": false, "message":
    ...}`` (a route the API does not have is answered by a web server's page, or by the
    framework's bare ``{"message": ...}``)."""
    return (
        isinstance(payload, dict)
        and payload.get("success") is False
        and isinstance(payload.get("message"), str)
    )


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
