"""Faults and rate limits: what stands between a request and its answer.

A fault is decided once per request, before the request is answered (``Faults.take``): the first
queued rule that matches the request wins; otherwise the probabilistic knobs are drawn in a fixed
order (429, 5xx, drop, stall) from a generator seeded by the simulator's seed. Status faults
replace the answer (``fault_response``); body faults (``invalid_json``, ``bad_envelope``,
``html200``) spoil the answer the request would have had (``corrupt``).

The two rate limiters count requests per key (a hash of the bearer token, or the client address
when there is none) on the real clock (``time.monotonic``), never the simulated data clock:

- ``FixedWindow`` is Laravel's throttle middleware: a key's window opens at its first counted
  request and lasts ``window`` seconds; the first ``limit`` requests in it pass, later ones get a
  429 until it ends. A refused request is not counted (Laravel checks ``tooManyAttempts`` before
  it calls ``hit``). Every answer carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``
  (what is left after this request); a 429 also ``Retry-After`` (seconds until the window ends,
  rounded up, at least 1) and ``X-RateLimit-Reset`` (the Unix time of the end, rounded up: real
  time, also when the ``Date`` header runs on the simulated clock, months ahead).
- ``TokenBucket`` is a bare bucket: ``burst`` tokens, refilled at ``rate`` a second; a request
  takes one or gets a 429 with nothing but ``Retry-After: 1``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from random import Random

from mihu_frames.simulator.server import Response, error

logger = logging.getLogger(__name__)

#: Kinds accepted by ``Simulator.fail_next``.
FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "500", "502", "503", "drop", "stall", "invalid_json", "bad_envelope", "html200", "401"}
)
#: Faults that spoil the body of the answer instead of replacing it.
BODY_FAULTS: frozenset[str] = frozenset({"invalid_json", "bad_envelope", "html200"})

_HTML200 = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>We\'ll be right back'
    b"</title></head>\n<body><h1>Scheduled maintenance</h1><p>Mihu is being upgraded. Please try "
    b"again in a few minutes.</p></body></html>\n"
)


@dataclass
class _FaultRule:
    kind: str
    remaining: int
    conversation: str | None
    page: int | None


@dataclass(frozen=True)
class Odds:
    """The probabilistic knobs at the time of a request."""

    rate_limit: float = 0.0
    server_error: float = 0.0
    drop: float = 0.0
    stall: float = 0.0


class Faults:
    """The queued rules and the seeded draws of one simulator. Thread-safe.

    Parameters
    ----------
    seed : int
        Seeds the draws, so a run's random faults repeat for the same request order.
    """

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = Random(f"mihu_frames.simulator.faults:{seed}")
        self._rules: list[_FaultRule] = []
        self._bad_envelope_variant = 0

    def queue(self, kind: str, n: int, conversation: str | None, page: int | None) -> None:
        """Make the next ``n`` matching requests fail with ``kind`` (see ``fail_next``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        rule = _FaultRule(kind, n, conversation.lower() if conversation else None, page)
        with self._lock:
            self._rules.append(rule)

    def take(self, conversation: str | None, page: int | None, odds: Odds) -> str | None:
        """The fault of one request (a ``FAULT_KINDS`` value), or None."""
        with self._lock:
            for rule in self._rules:
                if (rule.conversation is None or rule.conversation == conversation) and (
                    rule.page is None or rule.page == page
                ):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                    return rule.kind
            rng = self._rng
            if odds.rate_limit > 0 and rng.random() < odds.rate_limit:
                return "429"
            if odds.server_error > 0 and rng.random() < odds.server_error:
                return rng.choice(("500", "502", "503"))
            if odds.drop > 0 and rng.random() < odds.drop:
                return "drop"
            if odds.stall > 0 and rng.random() < odds.stall:
                return "stall"
        return None

    def corrupt(self, fault: str, response: Response) -> Response:
        """``response`` spoilt by a body fault; its headers are kept."""
        headers = response.headers
        if fault == "invalid_json":
            body = response.body
            return Response(200, body[: max(1, len(body) // 2)], headers=headers)
        if fault == "html200":
            return Response(200, _HTML200, "text/html; charset=UTF-8", headers=headers)
        data = b"[" + b",".join(response.items or []) + b"]"
        message = json.dumps(response.message or "Sessions retrieved successfully").encode()
        with self._lock:
            variant = self._bad_envelope_variant % 3
            self._bad_envelope_variant += 1
        if variant == 0:
            body = b'{"data":' + data + b"}"
        elif variant == 1:
            body = b'{"success":true,"message":' + message + b"}"
        else:
            body = b'{"success":true,"message":' + message + b',"data":' + data + b"}"
        return Response(200, body, headers=headers)


def fault_response(fault: str, retry_after: int, limit: int = 60) -> Response:
    """The answer a status fault (``401``, ``429``, ``5xx``) puts in place of the real one.

    A 429 says ``Retry-After: retry_after`` and ``X-RateLimit-Limit: limit`` (Laravel's stock 60,
    or the throttle's limit when it is on), ``X-RateLimit-Remaining: 0``.
    """
    if fault == "401":
        return error(401, "Unauthenticated.")
    if fault == "429":
        response = error(429, "Too Many Attempts.")
        response.headers = (
            ("Retry-After", str(int(retry_after))),
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", "0"),
        )
        return response
    status = int(fault)
    return Response(status, nginx_page(status), "text/html")


def nginx_page(status: int, title: str | None = None) -> bytes:
    """The HTML error page nginx sends for ``status``."""
    title = title or f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


# --- rate limits -------------------------------------------------------------------------------
def limit_key(authorization: str, client_host: str) -> str:
    """The key a request is counted under: its bearer token (hashed), else its address.

    The token is hashed so that neither the limiter's state nor its log lines hold it.
    """
    scheme, _, given = authorization.partition(" ")
    given = given.strip()
    if scheme.lower() == "bearer" and given:
        return "token:" + hashlib.sha256(given.encode("utf-8")).hexdigest()[:16]
    return "ip:" + client_host


@dataclass(frozen=True)
class Verdict:
    """A rate limiter's decision on one request and the headers that say so."""

    allowed: bool
    headers: tuple[tuple[str, str], ...]


class FixedWindow:
    """Laravel's throttle middleware: ``limit`` requests per ``window`` seconds per key.

    Thread-safe. ``limit`` and ``window`` are passed per request, so a change of the knobs takes
    effect at once (a window already open keeps its start).

    Parameters
    ----------
    monotonic, wall : callable
        The clocks (seconds): elapsed time, and Unix time for ``X-RateLimit-Reset``.

    Examples
    --------
    >>> now = [0.0]
    >>> throttle = FixedWindow(monotonic=lambda: now[0], wall=lambda: 1000.0 + now[0])
    >>> [throttle.hit("k", 2, 60.0).allowed for _ in range(3)]
    [True, True, False]
    >>> dict(throttle.hit("k", 2, 60.0).headers)["Retry-After"]
    '60'
    """

    _PRUNE_AT = 10_000  # keys; expired windows are dropped beyond this

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # key -> [opened at, requests counted]

    def hit(self, key: str, limit: int, window: float) -> Verdict:
        """Count a request under ``key`` if the window has room; say so in headers."""
        with self._lock:
            now = self._monotonic()
            state = self._windows.get(key)
            if state is None or now >= state[0] + window:
                if len(self._windows) >= self._PRUNE_AT:
                    self._prune(now, window)
                state = self._windows[key] = [now, 0]
            count = int(state[1])
            if count < limit:
                state[1] = count + 1
                return Verdict(True, _limit_headers(limit, limit - count - 1))
            reset_in = state[0] + window - now
        retry_after = max(1, math.ceil(reset_in))
        reset_at = math.ceil(self._wall() + reset_in)
        logger.debug("throttle %s: %d/%d used, 429 for %.3f s", key, count, limit, reset_in)
        headers = (
            *_limit_headers(limit, 0),
            ("Retry-After", str(retry_after)),
            ("X-RateLimit-Reset", str(reset_at)),
        )
        return Verdict(False, headers)

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._windows.clear()

    def _prune(self, now: float, window: float) -> None:
        for key in [k for k, (opened, _) in self._windows.items() if now >= opened + window]:
            del self._windows[key]


def _limit_headers(limit: int, remaining: int) -> tuple[tuple[str, str], ...]:
    return (("X-RateLimit-Limit", str(limit)), ("X-RateLimit-Remaining", str(remaining)))


class TokenBucket:
    """A bare token bucket per key: ``burst`` tokens, refilled at ``rate`` per second.

    Thread-safe; a key's bucket starts full. ``rate`` and ``burst`` are passed per request.

    Parameters
    ----------
    monotonic : callable
        The clock (seconds).

    Examples
    --------
    >>> now = [0.0]
    >>> bucket = TokenBucket(monotonic=lambda: now[0])
    >>> [bucket.take("k", rate=2.0, burst=3) for _ in range(4)]
    [True, True, True, False]
    >>> now[0] = 0.5  # one token back
    >>> [bucket.take("k", rate=2.0, burst=3) for _ in range(2)]
    [True, False]
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str, rate: float, burst: int) -> bool:
        """Take a token from ``key``'s bucket; False when it is empty."""
        with self._lock:
            now = self._monotonic()
            tokens, at = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - at) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
        if not allowed:
            logger.debug("bucket %s: empty (%.2f tokens), 429", key, tokens)
        return allowed

    def reset(self) -> None:
        """Refill every bucket (forget them)."""
        with self._lock:
            self._buckets.clear()
