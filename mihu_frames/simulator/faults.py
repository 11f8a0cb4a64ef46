"""Faults: deterministic ones queued by ``fail_next``, random ones drawn from the knobs.

A fault is decided once per request, before the request is answered (``Faults.take``): the first
queued rule that matches the request wins; otherwise the probabilistic knobs are drawn in a fixed
order (429, 5xx, drop, stall) from a generator seeded by the simulator's seed. Status faults
replace the answer (``fault_response``); body faults (``invalid_json``, ``bad_envelope``,
``html200``) spoil the answer the request would have had (``corrupt``).
"""

from __future__ import annotations

import logging
import threading
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
        with self._lock:
            variant = self._bad_envelope_variant % 3
            self._bad_envelope_variant += 1
        if variant == 0:
            body = b'{"data":' + data + b"}"
        elif variant == 1:
            body = b'{"success":true,"message":"Sessions retrieved successfully"}'
        else:
            body = b'{"success":true,"message":"Sessions retrieved successfully","data":' + data
            body += b"}"
        return Response(200, body, headers=headers)


def fault_response(fault: str, retry_after: int) -> Response:
    """The answer a status fault (``401``, ``429``, ``5xx``) puts in place of the real one."""
    if fault == "401":
        return error(401, "Unauthenticated.")
    if fault == "429":
        response = error(429, "Too Many Attempts.")
        response.headers = (
            ("Retry-After", str(int(retry_after))),
            ("X-RateLimit-Limit", "60"),
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
