"""Hostile servers for the load path: each serves one bad behaviour and records what it was asked.

Not the simulator: every server here is a few lines of purpose-built HTTP on 127.0.0.1, so a test
says exactly what the server did. :class:`HostileServer` runs one *behaviour* (a callable from
:class:`Request` to :class:`Reply`) on a thread per connection and records every request it got;
:class:`Reply` can be delayed, or dripped one byte at a time. The behaviours:

- :func:`deep_page`: a valid page with a value nested N levels deep in a session field, the
  contact, the envelope or the paginator (pyarrow's JSON reader stalls, then segfaults);
- :func:`gzip_bomb`: ~1 MB of ``Content-Encoding: gzip`` that inflates to 1 GiB;
- :class:`ClaimedPages`: a consistent paginator claiming any number of pages;
- :class:`Growing`: every response claims one more page than the one before;
- :class:`Drip`: a valid page sent one byte per ``interval`` seconds;
- :class:`Listing`: a sorted listing (created_at asc) that a test changes between loads
  (delete, insert, one-shot failures), with its ground truth; ``latency`` slows every page;
- :class:`Echo`: a server that repeats the token in error bodies, messages, session values and
  a response header;
- :class:`Route`: one behaviour per conversation.

:func:`run_load_in_child` runs ``mf.load_sessions`` in a child process and reports its exit code,
output, wall time and peak RSS (``ru_maxrss``), with a watchdog that ends a child which outgrows a
memory or time limit. :func:`json_depth` validates JSON without recursion (``json.loads`` cannot
read 50,000 levels) and returns its nesting.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import math
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import psutil

#: A token distinctive enough to search for in every byte the library writes.
TOKEN = "tok-SECRET-123"
#: Timestamps of generated sessions start here, one minute apart.
BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
_PATH = re.compile(r"^/api/v1/conversations/([^/]*)/sessions$")

Behaviour = Callable[["Request"], "Reply"]


def conversation_id(n: int) -> str:
    """A canonical UUID for conversation number ``n``."""
    return f"{n:08x}-0c0c-4000-8000-{n:012x}"


def session_id(conversation: str, index: int) -> str:
    """A canonical UUID for session ``index`` of ``conversation`` (unique across them)."""
    return f"{conversation[:8]}-5e55-4000-9000-{index:012x}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def make_session(
    conversation: str, index: int, *, created_at: datetime | None = None, **fields: Any
) -> dict[str, Any]:
    """A documented session: created ``index`` minutes after ``BASE_TIME``, ended 4 min later."""
    created = created_at or BASE_TIME + timedelta(minutes=index)
    ended = created + timedelta(minutes=4)
    session: dict[str, Any] = {
        "uuid": session_id(conversation, index),
        "started_at": _iso(created),
        "ended_at": _iso(ended),
        "last_activity_at": _iso(ended - timedelta(seconds=30)),
        "evaluated_at": None,
        "summary_generated_at": _iso(ended + timedelta(minutes=1)),
        "created_at": _iso(created),
        "updated_at": _iso(ended + timedelta(minutes=1)),
        "summary": f"session {index}",
        "conversation_uuid": conversation,
        "agent_uuid": "a9e2b3c4-0000-4000-8000-000000000001",
        "contact": {
            "uuid": f"c0c0c0c0-0000-4000-8000-{index:012x}",
            "name": "Ana",
            "surname": "Lee",
            "phone_number": "+15550100",
            "email": "ana@example.com",
        },
        "call_uuid": None,
        "campaign_uuid": None,
        "listing_uuid": None,
        "task_uuids": [f"7a5c0000-0000-4000-8000-{index:012x}"],
    }
    session.update(fields)
    return session


def page_payload(
    sessions: Sequence[Mapping[str, Any]], *, page: int, per_page: int, total: int
) -> dict[str, Any]:
    """The documented envelope around ``sessions`` (``last_page`` derived from ``total``)."""
    return {
        "success": True,
        "message": "Sessions retrieved successfully",
        "data": {
            "current_page": page,
            "data": list(sessions),
            "total": total,
            "last_page": max(1, math.ceil(total / per_page)),
            "per_page": per_page,
        },
    }


def dumps(payload: Any) -> bytes:
    """Compact JSON, as a Laravel backend sends it (no newlines)."""
    return json.dumps(payload, separators=(",", ":")).encode()


def error_body(message: str, **extra: Any) -> bytes:
    return dumps({"success": False, "message": message, **extra})


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    @property
    def conversation(self) -> str | None:
        """The conversation path segment, unquoted; None for another path."""
        match = _PATH.match(self.path)
        return unquote(match.group(1)) if match else None

    @property
    def page(self) -> int:
        return int(self.query.get("page", "1"))

    @property
    def per_page(self) -> int:
        return int(self.query.get("per_page", "15"))


@dataclass
class Reply:
    """What to send back, and how.

    ``delay`` waits before the first byte; ``drip`` sends the whole response (status line first,
    or only the body with ``drip_body_only``) one byte at a time, ``drip`` seconds apart.
    """

    status: int = 200
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    content_type: str = "application/json"
    delay: float = 0.0
    drip: float | None = None
    drip_body_only: bool = False
    #: The status line's reason phrase (the usual one for the status when None).
    reason: str | None = None


_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 422: "Unprocessable Content"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, hostile: HostileServer) -> None:
        self.hostile = hostile
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.open_lock:
            self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # a client hanging up is normal here
            self.hostile.failures.append(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60

    def do_GET(self) -> None:
        hostile = self.server.hostile
        request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        hostile._record(request)
        try:
            reply = hostile.behaviour(request)
        except Exception as exc:  # a bug in a behaviour shows as a 500 and in .failures
            hostile.failures.append(exc)
            reply = Reply(500, error_body(f"behaviour failed: {exc!r}"))
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        stop = self.server.hostile._stopping
        if reply.delay and stop.wait(reply.delay):
            self.close_connection = True
            return
        close = reply.drip is not None
        lines = [
            f"HTTP/1.1 {reply.status} {reply.reason or _REASONS.get(reply.status, 'Status')}",
            "Server: hostile",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            *(f"{name}: {value}" for name, value in reply.headers),
            "Connection: close" if close else "Connection: keep-alive",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            if reply.drip is None:
                self.wfile.write(head + reply.body)
                return
            self.close_connection = True
            if reply.drip_body_only:
                self.wfile.write(head)
            data = reply.body if reply.drip_body_only else head + reply.body
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.server.hostile.dripped += 1
                if stop.wait(reply.drip):
                    return
        except OSError:  # the client gave up (timed out, or the load ended)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HostileServer:
    """A real HTTP server on 127.0.0.1 running ``behaviour`` for every request.

    Use it as a context manager. ``requests`` is the log of every request received, in order.
    Stopping it ends every open connection (a dripping reply stops at once).
    """

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.failures: list[BaseException] = []
        self.dripped = 0
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HostileServer:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is None:
            return
        self._server.shutdown()
        with self._server.open_lock:
            sockets = list(self._server.open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, conversation: str, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"{self.base_url}/api/v1/conversations/{conversation}/sessions" + (
            f"?{query}" if query else ""
        )

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def pages(self, conversation: str | None = None) -> list[int]:
        """The pages asked for (of one conversation, or of all), in arrival order."""
        return [
            r.page for r in self.requests if conversation is None or r.conversation == conversation
        ]


@contextlib.contextmanager
def serve(behaviour: Behaviour) -> Iterator[HostileServer]:
    """``with serve(behaviour) as server:`` a started :class:`HostileServer`.

    A block that ends normally also checks the server did not fail itself.
    """
    server = HostileServer(behaviour).start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.failures, f"the hostile server itself failed: {server.failures!r}"


# --------------------------------------------------------------------------- behaviours


class Fixed:
    """The same reply to every request."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def __call__(self, request: Request) -> Reply:
        return self.reply


class Route:
    """One behaviour per conversation; any other conversation gets a 404."""

    def __init__(self, routes: Mapping[str, Behaviour]) -> None:
        self.routes = dict(routes)

    def __call__(self, request: Request) -> Reply:
        behaviour = self.routes.get(request.conversation or "")
        if behaviour is None:
            return Reply(404, error_body("Conversation not found"))
        return behaviour(request)


def nested(depth: int, shape: str = "list") -> str:
    """JSON text of a value with ``depth`` nested containers around a ``0``.

    ``"list"``: ``[[...[0]...]]``; ``"object"``: ``{"k":{"k":...0...}}``; ``"mixed"``: both,
    alternating. ``nested(0)`` is ``0``.
    """
    if shape == "list":
        return "[" * depth + "0" + "]" * depth
    if shape == "object":
        return '{"k":' * depth + "0" + "}" * depth
    if shape == "mixed":
        opens = ['{"k":[' for _ in range(depth // 2)] + (['{"k":'] if depth % 2 else [])
        closes = (["}"] if depth % 2 else []) + ["]}" for _ in range(depth // 2)]
        return "".join(opens) + "0" + "".join(closes)
    raise ValueError(shape)


#: Where :func:`deep_page` puts its deep value.
DEEP_PLACEMENTS = ("session", "contact", "envelope", "paginator")
_SLOT = '"__DEEP_VALUE__"'


def deep_page(conversation: str, placement: str, depth: int, shape: str = "list") -> bytes:
    """A one-page listing (two sessions) with a value nested ``depth`` levels deep.

    ``session``: the undocumented field ``x_deep`` of session 0; ``contact``: an undocumented
    member ``x_deep`` of session 0's contact; ``envelope``: an undocumented top-level ``meta``;
    ``paginator``: an undocumented ``links`` beside ``current_page`` (Laravel sends one there).
    """
    sessions = [make_session(conversation, 0), make_session(conversation, 1)]
    payload = page_payload(sessions, page=1, per_page=100, total=2)
    if placement == "session":
        sessions[0]["x_deep"] = "__DEEP_VALUE__"
    elif placement == "contact":
        sessions[0]["contact"]["x_deep"] = "__DEEP_VALUE__"
    elif placement == "envelope":
        payload["meta"] = "__DEEP_VALUE__"
    elif placement == "paginator":
        payload["data"]["links"] = "__DEEP_VALUE__"
    else:
        raise ValueError(placement)
    text = dumps(payload)
    assert text.count(_SLOT.encode()) == 1
    return text.replace(_SLOT.encode(), nested(depth, shape).encode())


@functools.cache
def gzip_bomb(inflated: int = 1 << 30) -> bytes:
    """One gzip member of ``inflated`` zero bytes (a multiple of 1 MiB): about 1 KB per MiB.

    Built from one full-flushed deflate block repeated (a full flush resets the compressor, so
    every later 1 MiB compresses to the same bytes), with the real CRC-32 and length trailer:
    a valid stream that any gzip reader inflates to exactly ``inflated`` bytes.
    """
    chunk = bytes(1 << 20)
    count, rest = divmod(inflated, len(chunk))
    assert count >= 2 and rest == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, inflated & 0xFFFFFFFF)
    return header + first + again * (count - 1) + end + trailer


class ClaimedPages:
    """A listing whose (consistent) paginator claims ``last_page`` pages of ``per_page``.

    Every page asked for is answered with ``per_page`` sessions, so a client that believes the
    claim can go on forever.
    """

    def __init__(self, last_page: int) -> None:
        self.last_page = last_page

    def __call__(self, request: Request) -> Reply:
        conversation = request.conversation or ""
        per_page, page = request.per_page, request.page
        first = (page - 1) * per_page
        sessions = [make_session(conversation, first + i) for i in range(per_page)]
        total = self.last_page * per_page
        return Reply(body=dumps(page_payload(sessions, page=page, per_page=per_page, total=total)))


class Growing:
    """Every response claims one more page than the one before: the listing never ends.

    The k-th response (per conversation) claims ``k + 1`` pages; each page holds ``per_page``
    distinct sessions.
    """

    def __init__(self) -> None:
        self.responses: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        conversation = request.conversation or ""
        with self._lock:
            self.responses[conversation] += 1
            claimed = self.responses[conversation] + 1
        per_page, page = request.per_page, request.page
        last_page = max(claimed, page)
        first = (page - 1) * per_page
        sessions = [make_session(conversation, first + i) for i in range(per_page)]
        payload = page_payload(sessions, page=page, per_page=per_page, total=last_page * per_page)
        return Reply(body=dumps(payload))


class Drip:
    """A valid one-page listing, sent one byte every ``interval`` seconds.

    With ``body_only`` the status line and headers go at once and only the body drips.
    """

    def __init__(self, interval: float = 1.0, *, body_only: bool = False) -> None:
        self.interval, self.body_only = interval, body_only

    def __call__(self, request: Request) -> Reply:
        conversation = request.conversation or ""
        sessions = [make_session(conversation, i) for i in range(3)]
        body = dumps(page_payload(sessions, page=request.page, per_page=request.per_page, total=3))
        return Reply(body=body, drip=self.interval, drip_body_only=self.body_only)


class Listing:
    """Conversations a test changes between loads, paged in the order asked for.

    ``truth(conversation)`` is the ground truth: every session uuid now listed, in the order of
    ``sort_by=created_at&sort_dir=asc`` (the library's default).
    ``fail_next(conversation, page)`` makes the next request for that page fail once.
    ``latency`` delays every page reply.
    """

    def __init__(self, sizes: Sequence[int], *, latency: float = 0.0, first: int = 1) -> None:
        self.latency = latency
        self._lock = threading.Lock()
        self._sessions: dict[str, list[dict[str, Any]]] = {}
        self._next: dict[str, int] = {}
        self._failures: dict[tuple[str, int], list[Reply]] = defaultdict(list)
        for n, size in enumerate(sizes, start=first):
            conversation = conversation_id(n)
            self._sessions[conversation] = [make_session(conversation, i) for i in range(size)]
            self._next[conversation] = size

    @property
    def conversations(self) -> list[str]:
        return list(self._sessions)

    def truth(self, conversation: str) -> list[str]:
        with self._lock:
            return [s["uuid"] for s in self._sorted(conversation)]

    def _sorted(self, conversation: str) -> list[dict[str, Any]]:
        return sorted(
            self._sessions[conversation], key=lambda s: (_parse(s["created_at"]), s["uuid"])
        )

    def delete_at(self, conversation: str, index: int) -> str:
        """Delete the session at position ``index`` of the listing; return its uuid."""
        with self._lock:
            gone = self._sorted(conversation)[index]
            self._sessions[conversation].remove(gone)
            return str(gone["uuid"])

    def insert_at(self, conversation: str, index: int) -> str:
        """Insert a new session so that it lands at position ``index``; return its uuid."""
        with self._lock:
            listing = self._sorted(conversation)
            before = _parse(listing[index - 1]["created_at"]) if index > 0 else None
            after = _parse(listing[index]["created_at"]) if index < len(listing) else None
            if before is None:
                assert after is not None
                created = after - timedelta(seconds=30)
            elif after is None:
                created = before + timedelta(seconds=30)
            else:
                created = before + (after - before) / 2
            number = self._next[conversation]
            self._next[conversation] += 1
            session = make_session(conversation, number, created_at=created)
            self._sessions[conversation].append(session)
            assert self._sorted(conversation).index(session) == index
            return str(session["uuid"])

    def fail_next(
        self, conversation: str, page: int, *, status: int = 500, delay: float = 0.0
    ) -> None:
        body = b"<html><head><title>500 Internal Server Error</title></head></html>"
        reply = Reply(status, body, content_type="text/html", delay=delay)
        with self._lock:
            self._failures[(conversation, page)].append(reply)

    def __call__(self, request: Request) -> Reply:
        conversation = request.conversation or ""
        page, per_page = request.page, request.per_page
        query = request.query
        with self._lock:
            failures = self._failures.get((conversation, page))
            if failures:
                return failures.pop(0)
            if conversation not in self._sessions:
                return Reply(404, error_body("Conversation not found"))
            key, direction = query.get("sort_by", "started_at"), query.get("sort_dir", "desc")
            if key not in ("created_at", "updated_at", "started_at") or direction not in (
                "asc",
                "desc",
            ):
                return Reply(422, error_body("unsupported sort here", errors={}))
            listing = sorted(
                self._sessions[conversation],
                key=lambda s: (_parse(s[key]), s["uuid"]),
                reverse=direction == "desc",
            )
        chunk = listing[(page - 1) * per_page : page * per_page]
        payload = page_payload(chunk, page=page, per_page=per_page, total=len(listing))
        return Reply(body=dumps(payload), delay=self.latency)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


#: Where :class:`Echo` repeats the token.
ECHO_KINDS = (
    "401",
    "422",
    "500-html",
    "200-success-false",
    "200-header",
    "200-session-fields",
    "200-escaped",
)


class Echo:
    """A server that repeats the token, bare and as ``Bearer <token>``.

    Every reply carries ``X-Echo: Bearer <token>``. The body depends on ``kind``:

    - ``401``: a JSON ``message`` quoting the token and the Authorization header;
    - ``422``: the token in the ``message``, in ``errors`` values and in an ``errors`` key;
    - ``500-html``: an nginx-style HTML page with the token in its ``<title>`` and body;
    - ``200-success-false``: a 200 whose ``success: false`` message quotes the token;
    - ``200-header``: a valid page with no token in its body (only in the header);
    - ``200-session-fields``: a valid page whose ``summary``, contact ``name``, an undocumented
      field and an undocumented nested field quote the token (see :data:`ECHOED_FIELDS`);
    - ``200-escaped``: a valid page whose ``summary`` quotes the token as JSON may spell it,
      some characters as ``\\u`` escapes (``json.loads`` gives back the token itself).

    Every reply's status line ends in a reason phrase that quotes the token too.
    """

    def __init__(self, kind: str, token: str = TOKEN) -> None:
        assert kind in ECHO_KINDS, kind
        self.kind, self.token = kind, token

    def __call__(self, request: Request) -> Reply:
        token, bearer = self.token, f"Bearer {self.token}"
        headers = [("X-Echo", bearer), ("Cache-Control", "no-cache, private")]
        reply = self._reply(request, token, bearer, headers)
        return replace(reply, reason=f"{_REASONS[reply.status]} {bearer}")

    def _reply(self, request: Request, token: str, bearer: str, headers: list[Any]) -> Reply:
        if self.kind == "401":
            body = error_body(f"Unauthenticated: token {token} is not valid ({bearer})")
            return Reply(401, body, headers)
        if self.kind == "422":
            errors = {
                "per_page": [f"The per page field is invalid for {bearer}."],
                "authorization": f"token {token}",
                f"header.{token}": ["echoed field name"],
            }
            body = error_body(f"The given data was invalid ({bearer}).", errors=errors)
            return Reply(422, body, headers)
        if self.kind == "500-html":
            body = (
                f"<html><head><title>500 Internal Server Error {bearer}</title></head>"
                f"<body><h1>Server Error</h1><p>Authorization: {bearer}</p></body></html>"
            ).encode()
            return Reply(500, body, headers, content_type="text/html")
        if self.kind == "200-success-false":
            body = error_body(f"token {token} has expired ({bearer})", data=None)
            return Reply(200, body, headers)
        conversation = request.conversation or ""
        sessions = [make_session(conversation, i) for i in range(3)]
        if self.kind == "200-header":
            payload = page_payload(sessions, page=request.page, per_page=request.per_page, total=3)
            return Reply(200, dumps(payload), headers)
        if self.kind == "200-escaped":
            sessions[0]["summary"] = "The caller read out ECHO on the call"
            payload = page_payload(sessions, page=request.page, per_page=request.per_page, total=3)
            # The first and every third character as \u escapes, in both cases of hex digit.
            spelled = "".join(
                (f"\\u{ord(c):04x}" if i % 2 else f"\\u{ord(c):04X}") if i % 3 == 0 else c
                for i, c in enumerate(bearer)
            )
            return Reply(200, dumps(payload).replace(b"ECHO", spelled.encode()), headers)
        sessions[0]["summary"] = f"The caller read out {bearer} on the call"
        sessions[1]["x_debug"] = f"Authorization: {bearer}"
        sessions[2]["contact"]["name"] = token
        sessions[2]["x_request"] = {"headers": {"authorization": [bearer]}}
        payload = page_payload(sessions, page=request.page, per_page=request.per_page, total=3)
        return Reply(200, dumps(payload), headers)


#: (row, where) of each session value :class:`Echo` puts the token in.
ECHOED_FIELDS = ((0, "summary"), (1, "extra"), (2, "contact_name"), (2, "extra"))


# --------------------------------------------------------------------------- JSON check


_JSON_TOKEN = re.compile(
    rb"""[ \t\r\n]*(?:
        (?P<punct>[{}\[\]:,])
      | (?P<string>"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*")
      | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      | (?P<literal>true|false|null)
    )""",
    re.VERBOSE,
)


def json_depth(text: bytes) -> int:
    """Check that ``text`` is exactly one JSON value (RFC 8259) and return its deepest nesting.

    Iterative, so it reads any depth (``json.loads`` stops near 1,000 levels). Raises
    ``ValueError`` at the first byte that breaks the grammar.
    """
    stack: list[bytes] = []
    expect = "value"  # value | value-or-] | key-or-} | key | colon | next | end
    deepest, pos = 0, 0
    while True:
        match = _JSON_TOKEN.match(text, pos)
        if match is None:
            if expect == "end" and not text[pos:].strip(b" \t\r\n"):
                return deepest
            raise ValueError(f"not JSON at byte {pos}")
        pos = match.end()
        punct = match.group("punct")
        scalar = match.group("string") or match.group("number") or match.group("literal")
        if expect in ("value", "value-or-]"):
            if punct in (b"[", b"{"):
                stack.append(punct)
                deepest = max(deepest, len(stack))
                expect = "value-or-]" if punct == b"[" else "key-or-}"
                continue
            if punct == b"]" and expect == "value-or-]":
                stack.pop()
            elif scalar is None:
                raise ValueError(f"expected a value at byte {match.start()}")
        elif expect in ("key", "key-or-}"):
            if match.group("string") is not None:
                expect = "colon"
                continue
            if punct == b"}" and expect == "key-or-}":
                stack.pop()
            else:
                raise ValueError(f"expected a key at byte {match.start()}")
        elif expect == "colon":
            if punct != b":":
                raise ValueError(f"expected ':' at byte {match.start()}")
            expect = "value"
            continue
        elif expect == "next":
            if punct == b"," and stack:
                expect = "value" if stack[-1] == b"[" else "key"
                continue
            if stack and punct == {b"[": b"]", b"{": b"}"}[stack[-1]]:
                stack.pop()
            else:
                raise ValueError(f"expected ',' or a closing bracket at byte {match.start()}")
        else:  # "end": something after the one value
            raise ValueError(f"trailing data at byte {match.start()}")
        expect = "next" if stack else "end"


# --------------------------------------------------------------------------- child processes


_CHILD = r"""
import json, resource, sys, time
spec = json.loads(sys.argv[1])
import mihu_frames as mf
outcome = {"error": None}
started = time.perf_counter()
try:
    df = mf.load_sessions(spec["conversations"], **spec["options"])
    outcome["rows"] = len(df)
except Exception as exc:
    outcome["error"] = type(exc).__name__
    outcome["classes"] = [cls.__name__ for cls in type(exc).__mro__]
    outcome["message"] = str(exc)[:2000]
    outcome["conversation"] = getattr(exc, "conversation", None)
    outcome["page"] = getattr(exc, "page", None)
outcome["seconds"] = time.perf_counter() - started
outcome["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            outcome["vmhwm_mb"] = int(line.split()[1]) / 1024
print("RESULT " + json.dumps(outcome), flush=True)
"""


@dataclass
class ChildRun:
    """How a child process ended: exit code, output, and what it reported about itself."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    #: "memory" or "timeout" when the watchdog killed the child.
    killed: str | None
    #: The largest RSS the watchdog saw (bytes), sampled every 20 ms.
    watched_rss: int
    #: What the child printed: error, classes, message, conversation, page, seconds,
    #: maxrss_mb (ru_maxrss), vmhwm_mb; None when it died before printing.
    result: dict[str, Any] | None

    def describe(self) -> str:
        """Everything worth seeing when an assertion on this run fails."""
        return (
            f"exit code {self.returncode}, killed={self.killed}, wall {self.wall:.1f} s, "
            f"watched RSS {self.watched_rss / 2**20:.0f} MB, result={self.result}\n"
            f"stdout: {self.stdout[-1500:]}\nstderr: {self.stderr[-3000:]}"
        )


def run_child(args: Sequence[str], *, timeout: float, memory_limit: int = 3 << 29) -> ChildRun:
    """Run ``args`` under ``/bin/sh``, which forks it; kill it past ``timeout`` s or RSS limit.

    ``ru_maxrss`` of a process exec'd straight from this one starts at *this* process's peak
    RSS (Linux carries it across the exec of a vfork'ed child), so a large test worker would
    show in the child's figure; a fork from the small shell starts clean. The shell also reports
    a crash the usual way: exit code 128 + signal (139 for a segfault).
    """
    command = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    killed: str | None = None
    peak = 0
    out: list[str] = []
    err: list[str] = []
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=0.02)
                out.append(stdout)
                err.append(stderr)
                break
            except subprocess.TimeoutExpired:
                pass
            rss = _tree_rss(proc.pid)
            peak = max(peak, rss)
            if rss > memory_limit:
                killed = "memory"
            elif time.monotonic() - started > timeout:
                killed = "timeout"
            if killed:
                _kill_tree(proc)
                stdout, stderr = proc.communicate()
                out.append(stdout)
                err.append(stderr)
                break
    finally:
        if proc.poll() is None:
            _kill_tree(proc)
            proc.communicate()
    wall = time.monotonic() - started
    return ChildRun(proc.returncode, "".join(out), "".join(err), wall, killed, peak, None)


def _tree_rss(pid: int) -> int:
    try:
        parent = psutil.Process(pid)
        total = 0
        for proc in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total
    except psutil.Error:
        return 0


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(OSError):
        proc.kill()


def run_load_in_child(
    conversations: str | Sequence[str],
    options: Mapping[str, Any],
    *,
    timeout: float = 30,
    memory_limit: int = 3 << 29,
) -> ChildRun:
    """``mf.load_sessions(conversations, **options)`` in a fresh interpreter.

    ``options`` must be JSON (paths as strings). The child prints one ``RESULT {...}`` line:
    the error's class, its classes, message, conversation and page, the load's seconds, and the
    process's peak RSS (``ru_maxrss``, and ``VmHWM`` beside it). The watchdog kills the child
    when its RSS passes ``memory_limit`` (default 1.5 GiB) or after ``timeout`` seconds.
    """
    spec = json.dumps({"conversations": conversations, "options": dict(options)})
    run = run_child(
        [sys.executable, "-X", "faulthandler", "-c", _CHILD, spec],
        timeout=timeout,
        memory_limit=memory_limit,
    )
    for line in run.stdout.splitlines():
        if line.startswith("RESULT "):
            run.result = json.loads(line[len("RESULT ") :])
    return run


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]
