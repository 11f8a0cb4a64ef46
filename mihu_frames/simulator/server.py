"""HTTP plumbing: the server and its thread, the handler, routing, envelopes, Laravel error bodies.

Nothing here knows the data: the handler passes every request to the application callable it is
given (``Pipeline.handle``) and writes the ``Response`` it gets back in a single send. Bodies
are built the way the Mihu backend (Laravel behind nginx) builds them: compact JSON, slashes
escaped in URLs, ``{"success": false, "message": ...}`` errors, 422 with an ``errors`` object.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from mihu_frames.simulator.data import ENCODER

logger = logging.getLogger(__name__)

_SESSIONS_ROUTE = re.compile(r"/api/v1/conversations/([^/]*)/sessions/?")
_CONVERSATION_ROUTE = re.compile(r"/api/v1/conversations/([^/]+)/?")
_LISTING_ROUTE = re.compile(r"/api/v1/conversations/?")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT_MAX = 2**63 - 1


@dataclass(frozen=True)
class RequestRecord:
    """One request the simulator received.

    Attributes
    ----------
    conversation : str or None
        The conversation segment of a sessions path or of one conversation's path, lower-cased
        (even if unknown or malformed); None for any other path.
    params : dict of str to str
        The query parameters (the last value wins for a repeated name).
    status : int
        The HTTP status sent; 0 when the connection was dropped without a response.
    page : int or None
        The page asked for (1 when absent) of the sessions or of the conversations listing; None
        when not a valid integer or not a paged path.
    endpoint : str or None
        ``"sessions"``, ``"conversations"`` (the listing), ``"conversation"`` (one), or None for
        any other path. Not compared: records equal as they did before it existed.
    """

    conversation: str | None
    params: dict[str, str]
    status: int
    page: int | None
    endpoint: str | None = field(default=None, compare=False)


@dataclass
class Response:
    """What the handler writes: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    items: list[bytes] | None = None  # a page's item bodies, for the bad_envelope fault
    message: str = ""  # a success envelope's message, for the bad_envelope fault


# --- routing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """A request path matched to an API endpoint.

    Attributes
    ----------
    endpoint : str
        ``"sessions"`` (a conversation's sessions), ``"conversations"`` (the account's
        conversations) or ``"conversation"`` (one conversation).
    conversation : str or None
        The conversation segment, lower-cased; None for the listing.
    paged : bool
        Whether the endpoint takes ``page`` and ``per_page``.
    """

    endpoint: str
    conversation: str | None = None

    @property
    def paged(self) -> bool:
        return self.endpoint != "conversation"


def route(path: str) -> Route | None:
    """The endpoint ``path`` asks for, or None (a 404 ``Not found.``)."""
    match = _SESSIONS_ROUTE.fullmatch(path)
    if match:
        return Route("sessions", match.group(1).lower())
    match = _CONVERSATION_ROUTE.fullmatch(path)
    if match:
        return Route("conversation", match.group(1).lower())
    if _LISTING_ROUTE.fullmatch(path):
        return Route("conversations")
    return None


# --- bodies ------------------------------------------------------------------------------------
def item(message: str, body: bytes) -> Response:
    """The success envelope around one item's JSON."""
    head = f'{{"success":true,"message":{ENCODER.encode(message)},"data":'.encode()
    return Response(200, head + body + b"}", items=[body], message=message)


def json_response(status: int, payload: dict[str, Any]) -> Response:
    """A JSON response of ``payload``."""
    return Response(status, ENCODER.encode(payload).encode("utf-8"))


def error(status: int, message: str) -> Response:
    """Laravel's error envelope: ``{"success": false, "message": ...}``."""
    return json_response(status, {"success": False, "message": message})


def validation_error(errors: dict[str, list[str]]) -> Response:
    """Laravel's 422: the first message (with "and N more errors") and every field's errors."""
    messages = [m for field_errors in errors.values() for m in field_errors]
    message = messages[0]
    if len(messages) > 1:
        more = len(messages) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return json_response(422, {"success": False, "message": message, "errors": errors})


def laravel_json(text: str) -> str:
    """JSON string the way Laravel's json_encode writes it (slashes escaped)."""
    return ENCODER.encode(text).replace("/", "\\/")


def paginated(
    message: str, path: str, page: int, per_page: int, total: int, items: list[bytes]
) -> Response:
    """Laravel's ``LengthAwarePaginator`` inside the success envelope, from item JSON bodies.

    Parameters
    ----------
    message : str
        The envelope's ``message``.
    path : str
        The page URL without a query (``data.path``); page URLs add ``?page=N``.
    page, per_page, total : int
        The page asked for, its size and the number of items over every page.
    items : list of bytes
        The page's items, each already JSON.
    """
    last_page = max(1, math.ceil(total / per_page))

    def url(number: int | None) -> str:
        return "null" if number is None else laravel_json(f"{path}?page={number}")

    first = (page - 1) * per_page + 1 if items else None
    tail = (
        f'],"from":{"null" if first is None else first},'
        f'"to":{"null" if first is None else first + len(items) - 1},'
        f'"path":{laravel_json(path)},'
        f'"next_page_url":{url(page + 1 if page < last_page else None)},'
        f'"prev_page_url":{url(page - 1 if page > 1 else None)},'
        f'"first_page_url":{url(1)},"last_page_url":{url(last_page)}}}}}'
    )
    head = (
        f'{{"success":true,"message":{ENCODER.encode(message)},"data":'
        f'{{"current_page":{page},"total":{total},"last_page":{last_page},'
        f'"per_page":{per_page},"data":['
    )
    body = head.encode() + b",".join(items) + tail.encode()
    return Response(200, body, items=items, message=message)


# --- validation --------------------------------------------------------------------------------
def parse_int(value: str) -> int | None:
    """An integer query value the way Laravel's ``integer`` rule reads it, else None."""
    value = value.strip()
    if not _INT_RE.fullmatch(value):
        return None
    number = int(value)
    return number if abs(number) <= _INT_MAX else None


def validate(
    params: dict[str, str],
    choices: tuple[tuple[str, str, tuple[str, ...]], ...],
    uuids: tuple[tuple[str, str], ...] = (),
) -> dict[str, list[str]]:
    """Laravel-style validation of ``page``, ``per_page`` (at most 100) and the given fields.

    Parameters
    ----------
    params : dict of str to str
        The query parameters; an empty value means absent (ConvertEmptyStringsToNull).
    choices : tuple of (name, label, allowed values)
        The enumerated fields (Laravel's ``in`` rule).
    uuids : tuple of (name, label)
        Fields that must be UUIDs (Laravel's ``uuid`` rule).

    Returns
    -------
    dict of str to list of str
        Field errors in Laravel's wording; empty when valid.
    """
    errors: dict[str, list[str]] = {}
    for name, label, maximum in (("page", "page", None), ("per_page", "per page", 100)):
        raw = params.get(name, "")
        if raw == "":  # ConvertEmptyStringsToNull + nullable
            continue
        number = parse_int(raw)
        if number is None:
            errors[name] = [f"The {label} field must be an integer."]
        elif number < 1:
            errors[name] = [f"The {label} field must be at least 1."]
        elif maximum is not None and number > maximum:
            errors[name] = [f"The {label} field must not be greater than {maximum}."]
    for name, label, allowed in choices:
        raw = params.get(name, "")
        if raw != "" and raw not in allowed:
            errors[name] = [f"The selected {label} is invalid."]
    for name, label in uuids:
        raw = params.get(name, "")
        if raw != "" and not UUID_RE.fullmatch(raw):
            errors[name] = [f"The {label} field must be a valid UUID."]
    return errors


# --- the server --------------------------------------------------------------------------------
class Server(ThreadingHTTPServer):
    """A threaded HTTP server that can close its open keep-alive connections on stop."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        app: Callable[[Handler, bool], None],
        http_date: Callable[[], str],
    ) -> None:
        self.app = app
        self.http_date = http_date
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Shut down every connection still open (wakes handlers blocked on them)."""
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Serving:
    """A ``Server`` serving in a daemon thread, from construction until ``stop``.

    Parameters
    ----------
    address : tuple of (str, int)
        Host and port to bind (port 0: any free port).
    app, http_date
        The ``Server``'s application callable and ``Date`` header.
    """

    def __init__(
        self,
        address: tuple[str, int],
        app: Callable[[Handler, bool], None],
        http_date: Callable[[], str],
    ) -> None:
        self.server = Server(address, app, http_date)
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mihu-simulator:{self.server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` where it serves."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving and close the open connections (handlers blocked on them wake)."""
        self.server.shutdown()
        self.server.server_close()
        self.server.close_open_connections()
        self._thread.join(timeout=5)


class Handler(BaseHTTPRequestHandler):
    """Passes GET and HEAD to the server's application; other methods get Laravel's 405."""

    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, *, head: bool) -> None:
        self._discard_body()
        try:
            self.server.app(self, head)
        except Exception:  # a simulator bug must show as a 500, not a hung client
            logger.exception("simulator failed on %s %s", self.command, self.path)
            self.close_connection = True
            self.send(error(500, "Server Error"), head=head)

    def _discard_body(self) -> None:
        """Read a request body nobody asked for, so the next keep-alive request parses."""
        length = parse_int(self.headers.get("Content-Length") or "0") or 0
        if length > 0:
            self.rfile.read(length)

    def _not_allowed(self) -> None:
        self._discard_body()
        path = urlsplit(self.path).path.lstrip("/")
        message = (
            f"The {self.command} method is not supported for route {path}. "
            "Supported methods: GET, HEAD."
        )
        self.send(error(405, message))

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def send(self, response: Response, *, head: bool = False) -> None:
        """Write status line, headers and body in a single send (no Nagle/delayed-ACK stalls)."""
        lines = [
            f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
            "Server: nginx",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-cache, private",
            *(f"{name}: {value}" for name, value in response.headers),
            "Connection: close" if self.close_connection else "Connection: keep-alive",
        ]
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head_bytes if head else head_bytes + response.body)
        except OSError:  # the client went away (e.g. it timed out during a stall)
            self.close_connection = True

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, from the simulator's clock (also for ``send_error`` responses)."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        return self.server.http_date()

    def drop(self) -> None:
        """Close the connection without sending anything."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        pass
