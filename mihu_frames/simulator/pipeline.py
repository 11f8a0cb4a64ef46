"""The request pipeline: what happens to a request between the socket and the application.

A request goes through it in this order (``Pipeline.handle``):

1. latency (``latency``);
2. the fault of the request (``faults.py``: a queued ``fail_next`` rule or a random draw), which
   may drop the connection, stall, or replace the answer (401, 429, 5xx): such requests stand in
   front of the application and are not counted by the rate limiters;
3. a path that is no API route gets ``404 Not found.`` (not counted either);
4. the token bucket (``bucket_rate``/``bucket_burst``), a gateway in front of the application:
   a 429 with only ``Retry-After: 1``;
5. Laravel's throttle (``rate_limit_max`` per ``rate_window``): a 429 with ``Retry-After`` and
   ``X-RateLimit-*``; when it lets the request through, its ``X-RateLimit-Limit``/``-Remaining``
   go on whatever the application answers next, errors included;
6. the application (``endpoints.py``): auth (401), the endpoint (404, 422, the page);
7. a body fault (``invalid_json``, ``bad_envelope``, ``html200``) may spoil that answer.

Both limiters key on the bearer token presented (hashed), or the client address without one, so
requests with a wrong token are counted apart from the right one's. Every request is recorded
with the status it got (``RequestLog``). The knobs are read at each request from the object that
holds them (the ``Simulator``), so they may change while it runs. Sleeps (latency, stalls) never
hold a lock and end early when the server stops.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from mihu_frames.simulator.endpoints import Endpoints
from mihu_frames.simulator.faults import (
    BODY_FAULTS,
    Faults,
    FixedWindow,
    Odds,
    TokenBucket,
    fault_response,
    limit_key,
)
from mihu_frames.simulator.server import (
    Handler,
    RequestRecord,
    Response,
    Route,
    error,
    parse_int,
    route,
)

logger = logging.getLogger(__name__)


class Knobs(Protocol):
    """The options a request reads as they are at that moment (``SimulatorOptions`` fields)."""

    latency: float
    rate_limit: float
    retry_after: int
    rate_limit_max: int
    rate_window: float
    bucket_rate: float
    bucket_burst: int
    server_error: float
    drop: float
    stall: float
    stall_seconds: float
    drift: int


class RequestLog:
    """The requests received, in order, each with the status it got (thread-safe appends).

    ``records`` is one list for the log's lifetime: ``clear`` empties it in place.
    """

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        """Append one request's record."""
        with self._lock:
            self.records.append(record)

    def clear(self) -> None:
        """Forget every record (the list is cleared in place)."""
        with self._lock:
            self.records.clear()


class Pipeline:
    """Steps 1 to 7 above, around an application.

    Parameters
    ----------
    knobs : Knobs
        Where the latency, fault odds, limits and drift are read at each request.
    endpoints : Endpoints
        The application (step 6).
    seed : int
        Seeds the random faults.
    """

    def __init__(self, knobs: Knobs, endpoints: Endpoints, seed: int) -> None:
        self.knobs = knobs
        self.endpoints = endpoints
        self.faults = Faults(seed)
        self.throttle = FixedWindow()
        self.bucket = TokenBucket()
        self.log = RequestLog()
        self.stopping = threading.Event()  # set: sleeps end at once

    def reset_rate_limits(self) -> None:
        """Forget what the rate limiters counted: every window closed, every bucket full."""
        self.throttle.reset()
        self.bucket.reset()

    def handle(self, handler: Handler, head: bool) -> None:
        """Answer one request (the server's application callable)."""
        knobs = self.knobs
        split = urlsplit(handler.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        matched = route(split.path)
        conversation = matched.conversation if matched else None
        page: int | None = None
        if matched is not None and matched.paged:
            page = 1 if params.get("page", "") == "" else parse_int(params["page"])
        endpoint = matched.endpoint if matched else None

        self._sleep(knobs.latency)
        odds = Odds(knobs.rate_limit, knobs.server_error, knobs.drop, knobs.stall)
        fault = self.faults.take(conversation, page, odds)
        logger.debug("%s %s -> fault %s", handler.command, handler.path, fault)
        if fault == "drop":
            self.log.add(RequestRecord(conversation, params, 0, page, endpoint))
            handler.drop()
            return
        if fault == "stall":
            self._sleep(knobs.stall_seconds)
            fault = None

        if fault is None or fault in BODY_FAULTS:
            response = self._answer(handler, matched, params)
            if fault is not None:
                response = self.faults.corrupt(fault, response)
        else:
            response = fault_response(fault, knobs.retry_after, knobs.rate_limit_max or 60)
        self.log.add(RequestRecord(conversation, params, response.status, page, endpoint))
        handler.send(response, head=head)

    def _answer(self, handler: Handler, matched: Route | None, params: dict[str, str]) -> Response:
        """The answer of steps 3 to 6: route, rate limits, the application."""
        if matched is None:
            return error(404, "Not found.")
        key = limit_key(handler.headers.get("Authorization", ""), handler.client_address[0])
        limited = self._limit(key)
        if isinstance(limited, Response):
            return limited
        response = self.endpoints.answer(handler, matched, params, drift=self.knobs.drift)
        response.headers = limited + response.headers
        return response

    def _limit(self, key: str) -> Response | tuple[tuple[str, str], ...]:
        """Steps 4 and 5: a 429 from a limiter, else the throttle's headers for the answer."""
        knobs = self.knobs
        if knobs.bucket_rate > 0 and not self.bucket.take(
            key, knobs.bucket_rate, knobs.bucket_burst
        ):
            response = error(429, "Too Many Requests.")
            response.headers = (("Retry-After", "1"),)
            return response
        if knobs.rate_limit_max <= 0:
            return ()
        verdict = self.throttle.hit(key, knobs.rate_limit_max, knobs.rate_window)
        if not verdict.allowed:
            response = error(429, "Too Many Attempts.")
            response.headers = verdict.headers
            return response
        return verdict.headers

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.stopping.wait(seconds)
