"""``Simulator``: the options, the data, the faults and the server put together.

A request goes through one pipeline (``Simulator._handle``), in this order:

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
6. the application: auth (401), the endpoint (404, 422, the page);
7. a body fault (``invalid_json``, ``bad_envelope``, ``html200``) may spoil that answer.

Both limiters key on the bearer token presented (hashed), or the client address without one, so
requests with a wrong token are counted apart from the right one's. Every request is recorded
with the status it got (``RequestRecord``).

The server keeps a simulated clock that continues the data: ``Simulator.now()`` is ``DATA_END`` (the
end of the generated span) plus the time since ``start``. The ``Date`` header of every response
and the timestamps written by ``add_sessions``, ``touch_sessions`` and drift come from it, so open
sessions look minutes or hours old however long after ``DATA_END`` the demo runs. ``clock="wall"``
uses the real clock instead. Sleeps (latency, stalls) never hold a lock.
"""

from __future__ import annotations

import email.utils
import hmac
import json
import logging
import threading
import time
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mihu_frames.simulator import listing
from mihu_frames.simulator import options as _options
from mihu_frames.simulator.data import (
    CHANNELS,
    END_US,
    EPOCH_UTC,
    SORT_KEYS,
    STATUSES,
    TYPES,
    Dataset,
)
from mihu_frames.simulator.faults import (
    BODY_FAULTS,
    Faults,
    FixedWindow,
    Odds,
    TokenBucket,
    fault_response,
    limit_key,
)
from mihu_frames.simulator.options import SimulatorOptions
from mihu_frames.simulator.server import (
    UUID_RE,
    Handler,
    RequestRecord,
    Response,
    Route,
    Server,
    error,
    item,
    paginated,
    parse_int,
    route,
    validate,
    validation_error,
)

logger = logging.getLogger(__name__)

_SEC = 1_000_000
_SESSION_CHOICES = (
    ("status", "status", STATUSES),
    ("type", "type", TYPES),
    ("sort_by", "sort by", SORT_KEYS),
    ("sort_dir", "sort dir", ("asc", "desc")),
)
_LISTING_CHOICES = (
    ("sort_by", "sort by", listing.LISTING_SORT_KEYS),
    ("sort_dir", "sort dir", ("asc", "desc")),
    ("channel", "channel", CHANNELS),
    ("status", "status", listing.CONVERSATION_STATUSES),
)
_LISTING_UUIDS = (("agent_uuid", "agent uuid"),)


class Simulator:
    """An HTTP server on 127.0.0.1 serving the Mihu API from synthetic data.

    Endpoints: ``GET /api/v1/conversations/{uuid}/sessions`` (documented), the account's
    conversations ``GET /api/v1/conversations`` and ``GET /api/v1/conversations/{uuid}`` (see
    ``listing.py``), all behind the same auth, latency, faults and rate limits.

    The constructor fixes the conversation UUIDs; each conversation's sessions are generated on
    first use (a request, ``ground_truth``, ``tags`` or a mutation), always the same way, so
    construction is instant even for large ``sizes``. ``start`` serves the data in a daemon
    thread. The knobs (latency, faults, drift) are plain attributes that may be changed while it
    runs, one by one or validated together with ``configure``.

    Parameters
    ----------
    **options
        The fields of ``SimulatorOptions`` (see its documentation and ``inspect.signature``):
        ``seed``, ``sizes``, ``token``, ``latency``, ``rate_limit``, ``retry_after``,
        ``rate_limit_max``, ``rate_window``, ``bucket_rate``, ``bucket_burst``, ``server_error``,
        ``drop``, ``stall``, ``stall_seconds``, ``drift``, ``host``, ``port``, ``clock``.

    Examples
    --------
    >>> with Simulator(seed=1, sizes=[120]) as sim:  # doctest: +SKIP
    ...     url = f"{sim.base_url}/api/v1/conversations/{sim.conversation_uuids[0]}/sessions"
    ...     reply = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"})
    ...     reply.json()["data"]["total"]
    120
    """

    seed: int
    sizes: tuple[int, ...]
    token: str
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
    host: str
    port: int
    clock: str

    def __init__(self, **options: Any) -> None:
        chosen = SimulatorOptions(**options)
        for f in fields(chosen):
            setattr(self, f.name, getattr(chosen, f.name))
        self.requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._faults = Faults(self.seed)
        self._throttle = FixedWindow()
        self._bucket = TokenBucket()
        self._started_ns: int | None = None  # time.monotonic_ns() at the first start()
        self._data = Dataset(self.seed, self.sizes, self._now_us)
        self.conversation_uuids: list[str] = self._data.uuids

    # --- options ----------------------------------------------------------------------------
    @property
    def options(self) -> SimulatorOptions:
        """The current options, knobs as they are now."""
        return SimulatorOptions(**{f.name: getattr(self, f.name) for f in _options.option_fields()})

    def configure(self, **knobs: Any) -> SimulatorOptions:
        """Change knobs together, validated first; return the options now in force.

        Parameters
        ----------
        **knobs
            Options that may change while running (``latency``, ``rate_limit``, ``server_error``
            ...). ``seed``, ``sizes``, ``token``, ``host``, ``port`` and ``clock`` are fixed.

        Examples
        --------
        >>> sim.configure(latency=0.01, server_error=0.05)  # doctest: +SKIP
        """
        fixed = sorted(set(knobs) - _options.knob_names())
        if fixed:
            known = {f.name for f in _options.option_fields()}
            unknown = sorted(set(fixed) - known)
            if unknown:
                raise TypeError(f"unknown simulator options {unknown}")
            raise ValueError(f"{fixed} are fixed when the simulator is built")
        new = SimulatorOptions(**{**vars(self.options), **knobs})
        for name in knobs:
            setattr(self, name, getattr(new, name))
        return new

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Start serving in a daemon thread and return ``self``.

        Returns
        -------
        Simulator
            ``self``, so ``sim = Simulator(...).start()`` works.
        """
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        if self._started_ns is None:  # a restart does not turn the clock back
            self._started_ns = time.monotonic_ns()
        server = Server((self.host, self.port), self._handle, self._http_date)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mihu-simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.info("simulator serving %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake sleeping handlers. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        logger.info("simulator stopped")

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"Simulator(seed={self.seed}, sizes={list(self.sizes)}, {where})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server.

        Raises
        ------
        RuntimeError
            If the simulator has not been started.
        """
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def now(self) -> datetime:
        """The simulator's current time (UTC): what the ``Date`` header and mutations use.

        With ``clock="simulated"`` it is ``DATA_END`` plus the time elapsed since the first
        ``start`` (``DATA_END`` before that), measured with ``time.monotonic``; with
        ``clock="wall"`` it is the real time.

        Returns
        -------
        datetime
            A timezone-aware UTC datetime with microsecond resolution.

        Examples
        --------
        >>> from mihu_frames.simulator import DATA_END
        >>> Simulator(sizes=[1]).now() == DATA_END
        True
        """
        return EPOCH_UTC + timedelta(microseconds=self._now_us())

    # --- requests log and deterministic faults ----------------------------------------------
    @property
    def request_count(self) -> int:
        """Number of requests received since the start or the last ``reset_requests``."""
        return len(self.requests)

    def reset_requests(self) -> None:
        """Forget the recorded requests (the list is cleared in place)."""
        with self._requests_lock:
            self.requests.clear()

    def fail_next(
        self, kind: str, n: int = 1, *, conversation: str | None = None, page: int | None = None
    ) -> None:
        """Make the next ``n`` matching requests fail with ``kind``.

        Parameters
        ----------
        kind : str
            ``"429"``, ``"500"``, ``"502"``, ``"503"``, ``"401"``; ``"drop"`` (close without a
            response); ``"stall"`` (answer after ``stall_seconds``); ``"invalid_json"`` (200 with a
            truncated JSON body); ``"bad_envelope"`` (200 JSON that is not the envelope);
            ``"html200"`` (200 ``text/html`` maintenance page).
        n : int
            How many requests fail.
        conversation, page : optional
            Only requests for this conversation (its sessions, or itself) and/or this page (of the
            sessions or of the conversations listing; page 1 when not given) match.

        Examples
        --------
        >>> sim.fail_next("503", 2, page=3)  # doctest: +SKIP
        """
        self._faults.queue(kind, n, conversation, page)

    def reset_rate_limits(self) -> None:
        """Forget what the rate limiters counted: every window closed, every bucket full."""
        self._throttle.reset()
        self._bucket.reset()

    # --- data access ------------------------------------------------------------------------
    def ground_truth(
        self,
        conversation: str | None = None,
        *,
        status: str | None = None,
        type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the sessions exactly as currently served, in ``created_at`` ascending order.

        Parameters
        ----------
        conversation : str, optional
            One conversation UUID; None means every conversation.
        status, type : str, optional
            Keep only sessions with this internal status / type (as the API filters do).

        Returns
        -------
        list of dict
            ``json.loads`` of each session's served bytes, undocumented fields included.

        Examples
        --------
        >>> Simulator(seed=1, sizes=[3]).ground_truth()[0]["uuid"]  # doctest: +SKIP
        '...'
        """
        return self._data.ground_truth(conversation, status, type)

    def conversations_truth(
        self,
        *,
        phone: str | None = None,
        agent_uuid: str | None = None,
        channel: str | None = None,
        status: str | None = None,
        sort_by: str = "created_at",
        sort_dir: str = "desc",
    ) -> list[dict[str, Any]]:
        """Return the account's conversations exactly as ``GET /api/v1/conversations`` lists them.

        Parameters
        ----------
        phone, agent_uuid, channel, status : str, optional
            The listing's filters, applied as the server applies them (``phone`` by its digits).
        sort_by : {"created_at", "updated_at"}
            The listing's order; the default (``created_at`` descending) is the listing's default.
        sort_dir : {"desc", "asc"}

        Returns
        -------
        list of dict
            ``json.loads`` of each conversation object, every page's in order.

        Examples
        --------
        >>> [c["sessions_count"] for c in Simulator(sizes=[2, 0]).conversations_truth()]
        [0, 2]
        """
        listing.check_filters(channel=channel, status=status, sort_by=sort_by, sort_dir=sort_dir)
        records = listing.listing(
            self._data,
            phone=phone,
            agent_uuid=agent_uuid,
            channel=channel,
            status=status,
            sort_by=sort_by,
            desc=sort_dir == "desc",
        )
        return [json.loads(r.body) for r in records]

    def tags(self) -> dict[str, tuple[str, str]]:
        """Return ``{session uuid: (status, type)}`` for every session (not in the served JSON)."""
        return self._data.tags()

    def generate_all(self) -> None:
        """Generate every conversation now rather than on first use (before timing a client)."""
        self._data.generate_all()

    # --- mutations --------------------------------------------------------------------------
    def add_conversation(self, size: int) -> str:
        """Generate a new conversation with ``size`` sessions and return its UUID.

        The content depends only on (seed, position, size), like the initial conversations.
        """
        return self._data.add_conversation(size)

    def add_sessions(self, conversation: str, n: int) -> list[str]:
        """Add ``n`` new open sessions created, started and updated now (strictly increasing).

        "Now" is ``now()``, pushed forward by a microsecond where needed so that every new
        timestamp is later than all timestamps before it.

        Returns
        -------
        list of str
            The new session UUIDs, oldest first.
        """
        return self._data.add_sessions(conversation, n)

    def touch_sessions(self, conversation: str, n: int) -> list[str]:
        """Record new activity on ``n`` existing sessions; return their UUIDs.

        Open sessions are chosen first: they get ``last_activity_at = updated_at = now`` and one in
        four ends now (status ``completed``, ``ended_at`` set). When fewer than ``n`` are open,
        closed sessions are touched too, but only their ``updated_at`` moves, so that
        ``last_activity_at <= ended_at`` keeps holding.
        """
        return self._data.touch_sessions(conversation, n)

    def delete_sessions(self, conversation: str, n: int) -> list[str]:
        """Delete ``n`` randomly chosen sessions (all if fewer) and return their UUIDs."""
        return self._data.delete_sessions(conversation, n)

    def share_session(self, session: str, conversation: str) -> None:
        """Serve an existing session under ``conversation`` too, as a backend that moved or
        merged conversations might: one session uuid listed by two conversations.

        The copy has the same fields, except ``conversation_uuid`` (the conversation it is now
        served under); from then on the two copies change independently (``touch_sessions``,
        ``delete_sessions`` of either conversation), as two rows of a real backend would.

        Raises
        ------
        KeyError
            If no conversation has the session, or ``conversation`` is unknown.
        ValueError
            If ``conversation`` already serves the session.
        """
        self._data.share_session(session, conversation)

    def upper_case_ids(self, conversation: str) -> None:
        """Serve ``conversation_uuid`` upper-case in the conversation's sessions (those it has
        now; sessions added later are served lower-case), as a backend or an import might: the
        same id in another spelling. Paths and the listing keep the lower-case id.
        """
        self._data.upper_case_ids(conversation)

    def set_timestamp(self, session: str, name: str, text: str) -> None:
        """Serve timestamp ``name`` of one session as ``text`` verbatim, as a misbehaving backend
        would (``"9999-12-31T23:00:00-12:00"``, ``"0001-01-01T00:00:00Z"``): the instant the
        generator never produces. Orderings (``sort_by``) follow the instant.

        Raises
        ------
        KeyError
            If no conversation has the session.
        """
        self._data.set_timestamp(session, name, text)

    # --- internals --------------------------------------------------------------------------
    def _now_us(self) -> int:
        """``now()`` in epoch microseconds."""
        if self.clock == "wall":
            return time.time_ns() // 1000
        started = self._started_ns
        if started is None:
            return END_US
        return END_US + (time.monotonic_ns() - started) // 1000

    def _http_date(self) -> str:
        """``Date`` header value: now, rounded up to the second and never before an instant
        handed out, so every timestamp a response can contain is at or before its ``Date``."""
        us = max(self._now_us(), self._data.latest_us)
        seconds = -(-us // _SEC)
        return email.utils.format_datetime(EPOCH_UTC + timedelta(seconds=seconds), usegmt=True)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _record(self, record: RequestRecord) -> None:
        with self._requests_lock:
            self.requests.append(record)

    def _handle(self, handler: Handler, head: bool) -> None:
        """Answer one request (the server's application callable)."""
        split = urlsplit(handler.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        matched = route(split.path)
        conversation = matched.conversation if matched else None
        page: int | None = None
        if matched is not None and matched.paged:
            page = 1 if params.get("page", "") == "" else parse_int(params["page"])
        endpoint = matched.endpoint if matched else None

        self._sleep(self.latency)
        odds = Odds(self.rate_limit, self.server_error, self.drop, self.stall)
        fault = self._faults.take(conversation, page, odds)
        logger.debug("%s %s -> fault %s", handler.command, handler.path, fault)
        if fault == "drop":
            self._record(RequestRecord(conversation, params, 0, page, endpoint))
            handler.drop()
            return
        if fault == "stall":
            self._sleep(self.stall_seconds)
            fault = None

        if fault is None or fault in BODY_FAULTS:
            response = self._answer(handler, matched, params)
            if fault is not None:
                response = self._faults.corrupt(fault, response)
        else:
            response = fault_response(fault, self.retry_after, self.rate_limit_max or 60)
        self._record(RequestRecord(conversation, params, response.status, page, endpoint))
        handler.send(response, head=head)

    def _answer(self, handler: Handler, matched: Route | None, params: dict[str, str]) -> Response:
        """The answer of steps 3 to 6 of the pipeline: route, rate limits, auth, endpoint."""
        if matched is None:
            return error(404, "Not found.")
        key = limit_key(handler.headers.get("Authorization", ""), handler.client_address[0])
        if self.bucket_rate > 0 and not self._bucket.take(key, self.bucket_rate, self.bucket_burst):
            response = error(429, "Too Many Requests.")
            response.headers = (("Retry-After", "1"),)
            return response
        limit_headers: tuple[tuple[str, str], ...] = ()
        if self.rate_limit_max > 0:
            verdict = self._throttle.hit(key, self.rate_limit_max, self.rate_window)
            if not verdict.allowed:
                response = error(429, "Too Many Attempts.")
                response.headers = verdict.headers
                return response
            limit_headers = verdict.headers
        if not self._authenticated(handler):
            response = error(401, "Unauthenticated.")
        elif matched.endpoint == "sessions":
            response = self._sessions(handler, matched, params)
        elif matched.endpoint == "conversations":
            response = self._listing(handler, params)
        else:
            response = self._one_conversation(matched)
        response.headers = limit_headers + response.headers
        return response

    def _authenticated(self, handler: Handler) -> bool:
        scheme, _, given = handler.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8"), self.token.encode("utf-8")
        )

    def _sessions(self, handler: Handler, matched: Route, params: dict[str, str]) -> Response:
        conversation = matched.conversation or ""
        if not UUID_RE.fullmatch(conversation) or conversation not in self._data.conversations:
            return error(404, "Conversation not found.")
        errors = validate(params, _SESSION_CHOICES)
        if errors:
            return validation_error(errors)
        page = parse_int(params.get("page") or "1") or 1
        per_page = parse_int(params.get("per_page") or "15") or 15
        found = self._data.sessions_page(
            conversation,
            status=params.get("status") or None,
            type_=params.get("type") or None,
            sort_by=params.get("sort_by") or "started_at",
            desc=(params.get("sort_dir") or "desc") == "desc",
            page=page,
            per_page=per_page,
            drift=self.drift,
        )
        if found is None:  # deleted meanwhile
            return error(404, "Conversation not found.")
        total, items = found
        path = f"{self._origin(handler)}/api/v1/conversations/{conversation}/sessions"
        return paginated("Sessions retrieved successfully", path, page, per_page, total, items)

    def _listing(self, handler: Handler, params: dict[str, str]) -> Response:
        errors = validate(params, _LISTING_CHOICES, _LISTING_UUIDS)
        if errors:
            return validation_error(errors)
        page = parse_int(params.get("page") or "1") or 1
        per_page = parse_int(params.get("per_page") or "15") or 15
        records = listing.listing(
            self._data,
            phone=params.get("phone") or None,
            agent_uuid=params.get("agent_uuid") or None,
            channel=params.get("channel") or None,
            status=params.get("status") or None,
            sort_by=params.get("sort_by") or "created_at",
            desc=(params.get("sort_dir") or "desc") == "desc",
        )
        start = (page - 1) * per_page
        items = [r.body for r in records[start : start + per_page]]
        path = f"{self._origin(handler)}/api/v1/conversations"
        message = "Conversations retrieved successfully"
        return paginated(message, path, page, per_page, len(records), items)

    def _one_conversation(self, matched: Route) -> Response:
        found = listing.one(self._data, matched.conversation or "")
        if found is None:
            return error(404, "Conversation not found.")
        return item("Conversation retrieved successfully", found.body)

    def _origin(self, handler: Handler) -> str:
        host = handler.headers.get("Host") or self.base_url.split("//", 1)[1]
        return f"http://{host}"


Simulator.__signature__ = _options.signature()  # type: ignore[attr-defined]
