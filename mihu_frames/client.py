"""HTTP for the Mihu AI API: configuration, cache, retries, and errors from responses.

One :class:`MihuClient` fetches pages two ways, both retrying with urllib3's ``Retry`` (429
with ``Retry-After``, 5xx, dropped connections, read timeouts):

- a page the cache may hold goes through a requests-cache ``CachedSession`` on a SQLite file;
- a page the cache does not hold (or any page with ``refresh=True`` or ``cache=None``) goes
  straight to a urllib3 pool: a cold load spends half its CPU time in ``requests``' own
  per-request layers otherwise. Such pages are saved into requests-cache once decoded.

Planning and fetching many pages concurrently lives in :mod:`mihu_frames.pages`.

The token lives in the sessions' default headers and the pool's request headers and nowhere
else: not in the repr, not in cache keys or stored requests (``ignored_parameters``), not in
any message.
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import json
import logging
import os
import pickle
import re
import sqlite3
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests_cache.policy.expiration import get_expiration_datetime
from urllib3.util.retry import Retry

from mihu_frames import background
from mihu_frames._version import __version__
from mihu_frames.errors import (
    AuthenticationError,
    CacheLockedError,
    CacheMissError,
    MihuError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from mihu_frames.framecache import FrameCache

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("mihu_frames")

API_PATH = "/api/v1/conversations/{uuid}/sessions"
DEFAULT_EXPIRE_AFTER = timedelta(hours=1)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: A server's Retry-After is honoured up to a minute, so a load cannot sleep for hours; after
#: the retries it becomes a RateLimitError (urllib3 >= 2.5 knows the option; older ones ignore).
_RETRY_AFTER_CAP = (
    {"retry_after_max": 60} if "retry_after_max" in inspect.signature(Retry).parameters else {}
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class PageResponse:
    """One page as it came back: body and where it came from."""

    body: bytes
    fetched_at: datetime
    from_cache: bool
    retries: int
    cache_key: str | None
    expires: datetime | None = None
    #: For a page fetched from the network into a cached client: what requests-cache stores
    #: once the body has been decoded (a ``requests.Response`` or a ``CachedResponse``).
    response: Any = field(default=None, repr=False, compare=False)


def check_uuid(value: object) -> str:
    """Return ``value`` if it is a UUID string, else raise ``ValueError``.

    Only the canonical 8-4-4-4-12 hex form passes, so a conversation id can never add a path
    segment, a query or anything else to the request URL.
    """
    if not isinstance(value, str) or not _UUID.match(value):
        raise ValueError(f"not a conversation UUID: {value!r:.60}")
    return value.lower()


def default_cache_path() -> Path:
    """The default requests-cache SQLite file, in the user's cache directory."""
    import platformdirs

    return platformdirs.user_cache_path("mihu_frames") / "http_cache.sqlite"


def resolve_base_url(base_url: str | None, subdomain: str | None) -> str:
    """Base URL from the arguments or ``MIHU_BASE_URL`` / ``MIHU_SUBDOMAIN``."""
    if base_url and subdomain:
        raise ValueError("pass base_url or subdomain, not both")
    if not base_url and not subdomain:
        base_url = os.environ.get("MIHU_BASE_URL") or None
        subdomain = os.environ.get("MIHU_SUBDOMAIN") or None
    if subdomain:
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", subdomain):
            raise ValueError(f"not a valid subdomain: {subdomain!r}")
        return f"https://{subdomain.lower()}.mihu.ai"
    if not base_url:
        raise ValueError(
            "no API address: pass base_url= or subdomain=, or set MIHU_BASE_URL or MIHU_SUBDOMAIN"
        )
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    return base_url.rstrip("/")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MihuClient:
    """A client for the Mihu AI sessions endpoint, with a cache, retries and a worker pool.

    Parameters
    ----------
    base_url : str, optional
        ``https://{subdomain}.mihu.ai``; defaults to ``MIHU_BASE_URL``.
    subdomain : str, optional
        Instead of ``base_url``; defaults to ``MIHU_SUBDOMAIN``.
    token : str, optional
        Bearer token; defaults to ``MIHU_API_TOKEN``. Never logged, cached, written or shown.
    cache : "default", str, Path or None
        ``"default"``: a requests-cache SQLite file in the user cache directory; a path: that
        file; ``None``: no cache. The file holds contact data and is created owner-only.
    expire_after : timedelta, int seconds or None
        How long a cached page stays fresh (default one hour; ``None``: never expires).
    max_workers : int
        Pages fetched at once, across all conversations (default 8).
    timeout : float
        Seconds to wait for a connection and for each read (default 30).
    retries : int
        Retries per page for 429, 5xx, dropped connections and timeouts (default 5).
    backoff_factor : float
        urllib3 backoff between retries that carry no ``Retry-After`` (default 0.5 s, doubling).

    Examples
    --------
    >>> import mihu_frames as mf
    >>> with mf.MihuClient(subdomain="acme") as client:           # doctest: +SKIP
    ...     df = client.sessions(["3c90c3cc-0d44-4b50-8888-8dd25736052a"], status="all")
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        subdomain: str | None = None,
        token: str | None = None,
        cache: str | os.PathLike[str] | None = "default",
        expire_after: timedelta | int | float | None = DEFAULT_EXPIRE_AFTER,
        max_workers: int = 8,
        timeout: float = 30,
        retries: int = 5,
        backoff_factor: float = 0.5,
    ) -> None:
        self.base_url = resolve_base_url(base_url, subdomain)
        # How requests spells the address (lower-case host, quoting), so a URL built here and
        # one requests prepares from it give the same cache key.
        self._url_base = requests.Request("GET", self.base_url).prepare().url.rstrip("/")
        token = token if token is not None else os.environ.get("MIHU_API_TOKEN")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ValueError("token must be a non-empty string")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        parts = urlsplit(self.base_url)
        if token and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"refusing to send the API token over plain http to {parts.hostname}; use https"
            )
        self.max_workers = max_workers
        self.timeout = float(timeout)
        self.retries = retries
        self.expire_after = expire_after
        self._expire_after = -1 if expire_after is None else expire_after
        self.cache_path: Path | None = None
        if cache is not None:
            self.cache_path = default_cache_path() if cache == "default" else Path(cache)
        self._has_token = bool(token)
        try:
            self._open(backoff_factor)
        except sqlite3.OperationalError as exc:  # cannot open, read-only, disk full...
            raise MihuError(f"cannot use the cache file {self.cache_path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed
            assert self.cache_path is not None
            for name in ("_session", "_writer"):
                opened = getattr(self, name, None)
                if opened is not None:
                    opened.close()
            aside = _move_aside(self.cache_path)
            logger.warning(
                "the cache file %s is damaged (%s); moved it to %s and started a new one",
                self.cache_path,
                exc,
                aside,
            )
            self._open(backoff_factor)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._secret = token or None

    def _open(self, backoff_factor: float) -> None:
        self._session: requests.Session | None = None
        self._writer: requests.Session | None = None
        self._opening = threading.Lock()
        self.frame_cache: FrameCache | None = None
        if self.cache_path is not None:
            _create_private_file(self.cache_path)
            _check_not_locked(self.cache_path, self.timeout)
            self.frame_cache = FrameCache(self.cache_path)
        self._retry = self._make_retry(backoff_factor)
        self._adapter = HTTPAdapter(
            max_retries=self._retry, pool_connections=4, pool_maxsize=max(self.max_workers, 10)
        )
        # Proxy and CA bundle from the environment, read once (see _configure).
        self._proxies = requests.utils.get_environ_proxies(self.base_url)
        self._bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        # Pages the cache does not hold skip requests-cache's lookup (see cached_keys) and
        # requests' per-request layers: they go to this urllib3 pool, with the same proxy, CA
        # bundle, retries and headers as the cached session.
        self._pool = _pool_manager(self.base_url, self._adapter, self._proxies, self._bundle)
        self._timeouts = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        self._headers = {
            "Accept": "application/json",
            "Accept-Encoding": urllib3.util.make_headers(accept_encoding=True)["accept-encoding"],
            "User-Agent": f"mihu_frames/{__version__}",
        }

    # ------------------------------------------------------------------ set-up

    def _cached(self, *, writer: bool = False) -> requests.Session:
        """A requests-cache session on the cache file, opened on first use.

        The reader looks pages up (read-only: pages are saved only once validated, by the
        background writer, see :meth:`store`); the writer serves :meth:`clear_cache` and
        :meth:`forget`. A load served whole from the stored result opens neither.
        """
        assert self.cache_path is not None
        name = "_writer" if writer else "_session"
        with self._opening:
            session = getattr(self, name)
            if session is None:
                try:
                    session = _cached_session(
                        self.cache_path, self._expire_after, read_only=not writer
                    )
                except sqlite3.Error as exc:
                    raise MihuError(f"cannot use the cache file {self.cache_path}: {exc}") from None
                if not writer:
                    _configure(session, self._adapter, self._proxies, self._bundle)
                    session.headers.update(self._headers)
                setattr(self, name, session)
        return session

    def _make_retry(self, backoff_factor: float) -> Retry:
        return Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            backoff_factor=backoff_factor,
            backoff_max=60,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}),
            respect_retry_after_header=True,
            raise_on_status=False,
            **_RETRY_AFTER_CAP,
        )

    def __repr__(self) -> str:
        cache = str(self.cache_path) if self.cache_path else None
        token = "set" if self._has_token else "none"
        return f"MihuClient(base_url={self.base_url!r}, cache={cache!r}, token={token})"

    def close(self) -> None:
        """Close the HTTP sessions and the cache file.

        Cache writes still running (validated pages, the stored load: see
        :mod:`mihu_frames.background`) finish on their own thread: the next reader of this file
        waits for them, and so does interpreter exit; :meth:`flush_cache` waits explicitly.
        """
        for session in (self._session, self._writer):
            if session is not None:
                session.close()
        self._pool.clear()

    def __enter__(self) -> MihuClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("MihuClient holds a live session and a secret; it cannot be pickled")

    # ------------------------------------------------------------------ one page

    def page_url(self, conversation: str, params: Mapping[str, str | int] | None = None) -> str:
        """The sessions URL of one conversation (the UUID is checked, then quoted), with
        ``params`` as its query string, spelled exactly as ``requests`` would spell it."""
        url = self._url_base + API_PATH.format(uuid=quote(check_uuid(conversation), safe=""))
        return f"{url}?{urlencode(params)}" if params else url

    def fetch_page(
        self,
        conversation: str,
        params: Mapping[str, str | int],
        *,
        refresh: bool = False,
        offline: bool = False,
        cached: Collection[str] | None = None,
    ) -> PageResponse:
        """Fetch one page, through the cache and retries, and map failures to typed errors.

        The body is returned unparsed; :mod:`mihu_frames.frame` decodes it. ``cached`` is the
        set of cache keys known to be held (:meth:`cached_keys`): a page outside it, or any
        page with ``refresh=True``, goes straight to the network.
        """
        page = int(params.get("page", 1))
        url = self.page_url(conversation, params)
        if self.cache_path is None:
            return self._fetch_from_network(url, None, conversation, page)
        key = url_key(url)
        if not offline and (refresh or (cached is not None and key not in cached)):
            return self._fetch_from_network(url, key, conversation, page)
        try:
            # Redirects are reported, never followed (they could carry the token elsewhere),
            # on this path as on the pool's.
            response = self._cached().get(
                url, timeout=self.timeout, only_if_cached=offline, allow_redirects=False
            )
        except (OverflowError, EOFError, MemoryError, pickle.UnpicklingError) as exc:
            # A damaged cache row that requests-cache does not catch: drop it, refetch.
            logger.warning("dropping a damaged cache entry %s: %r", key, exc)
            self.forget(key)
            if offline:
                raise CacheMissError(
                    "the cached page was damaged and offline=True",
                    conversation=conversation,
                    page=page,
                ) from None
            return self._fetch_from_network(url, key, conversation, page)
        except requests.RequestException as exc:
            raise ServerError(
                f"no response after {self.retries} retries ({_describe(exc)})",
                conversation=conversation,
                page=page,
            ) from None
        from_cache = bool(getattr(response, "from_cache", False))
        if offline and response.status_code == 504 and from_cache:
            raise CacheMissError(
                "not in the cache and offline=True; load once online (or drop offline=True)",
                conversation=conversation,
                page=page,
            )
        if response.status_code != 200:
            raise self._error(
                response.status_code, response.content, response.reason, conversation, page
            )
        retry_state = getattr(response.raw, "retries", None)
        fetched_at = _served_at(response.headers.get("Date"), getattr(response, "created_at", None))
        if from_cache:
            return PageResponse(
                body=response.content,
                fetched_at=fetched_at,
                from_cache=True,
                retries=0,
                cache_key=getattr(response, "cache_key", None) or key,
                expires=getattr(response, "expires", None),
            )
        # An expired page, fetched anew by requests-cache (which saves nothing: read-only).
        return PageResponse(
            body=response.content,
            fetched_at=fetched_at,
            from_cache=False,
            retries=len(retry_state.history) if retry_state is not None else 0,
            cache_key=key,
            expires=get_expiration_datetime(self._expire_after),
            response=response,
        )

    def _fetch_from_network(
        self, url: str, key: str | None, conversation: str, page: int
    ) -> PageResponse:
        """GET ``url`` on the urllib3 pool (retries included); ``key`` set: keep it storable."""
        try:
            reply = self._pool.urlopen(
                "GET",
                url,
                headers=self._headers,
                retries=self._retry,
                timeout=self._timeouts,
                # A redirect could carry the token to another host: reported, not followed.
                redirect=False,
                preload_content=True,
                decode_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ServerError(
                f"no response after {self.retries} retries ({_describe(exc)})",
                conversation=conversation,
                page=page,
            ) from None
        if reply.status != 200:
            raise self._error(reply.status, reply.data, reply.reason, conversation, page)
        body, headers = reply.data, reply.headers
        storable = key is not None
        return PageResponse(
            body=body,
            fetched_at=_served_at(headers.get("Date")),
            from_cache=False,
            retries=len(reply.retries.history) if reply.retries is not None else 0,
            cache_key=key,
            expires=get_expiration_datetime(self._expire_after) if storable else None,
            response=(
                _Fetched(url, reply.status, reply.reason or "", dict(headers.items()), body)
                if storable
                else None
            ),
        )

    def cached_keys(self) -> frozenset[str] | None:
        """The keys of every page the cache holds (fresh or not), read in one query."""
        if self.cache_path is None:
            return frozenset()
        background.flush(self.cache_path)
        try:
            # Just the key column, without opening a whole CachedSession (~5 ms of set-up a
            # cold load would pay before its first request).
            from requests_cache.backends.sqlite import SQLiteDict

            table = SQLiteDict(self.cache_path, "responses", serializer=None, wal=True)
            try:
                return frozenset(table.keys())
            finally:
                table.close()
        except sqlite3.Error as exc:
            logger.warning("could not list %s: %s", self.cache_path, exc)
            return None  # unknown: every page asks the cache

    def store(self, pages: Iterable[PageResponse]) -> None:
        """Save fetched pages to the cache, once they have been decoded and found valid.

        The lookup session is read-only for requests-cache, so nothing reaches the cache before
        :mod:`mihu_frames.frame` has checked the whole body. The pages are saved by the cache
        file's background writer (:mod:`mihu_frames.background`), in one transaction, after
        what was handed to it before; the caller does not wait.
        """
        fresh = [page for page in pages if page.response is not None]
        if fresh and self.cache_path is not None:
            headers = {k: v for k, v in self._headers.items() if k != "Authorization"}
            background.submit(
                self.cache_path, _save_pages, self.cache_path, self._expire_after, fresh, headers
            )

    def flush_cache(self) -> None:
        """Wait until the cache writes this process started on the cache file are done.

        A load hands its frame back before its pages and result are saved; every later read
        of the file through mihu_frames waits for them anyway, so this is only needed to look
        at the file by other means (or to copy it).
        """
        if self.cache_path is not None:
            background.flush(self.cache_path)

    def clear_cache(self) -> None:
        """Empty this client's cache file: every page and every stored load."""
        if self.cache_path is not None:
            background.flush(self.cache_path)
            self._cached(writer=True).cache.clear()  # type: ignore[attr-defined]
            if self.frame_cache is not None:
                self.frame_cache.clear()

    def forget(self, cache_key: str | None) -> None:
        """Drop one response from the cache (used when its body turned out to be invalid)."""
        if cache_key and self.cache_path is not None:
            background.flush(self.cache_path)
            try:
                self._cached(writer=True).cache.delete(cache_key)  # type: ignore[attr-defined]
            except sqlite3.Error as exc:
                logger.warning("could not drop cache entry %s: %s", cache_key, exc)
                return
            logger.debug("dropped cache entry %s: body is not the documented envelope", cache_key)

    def _error(
        self, status: int, body: bytes, reason: str | None, conversation: str, page: int
    ) -> MihuError:
        payload = _json_or_none(body)
        message = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(message, str) or not message:
            message = _plain_text(body, reason)
        message = self._scrub(message)
        where = {"conversation": conversation, "page": page, "status_code": status}
        if status in (401, 403):
            return AuthenticationError(f"{message} (check MIHU_API_TOKEN or token=)", **where)
        if status == 404:
            return NotFoundError(message, **where)
        if status == 422:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            clean = (
                {
                    str(k): [self._scrub(str(m)) for m in (v if isinstance(v, list) else [v])]
                    for k, v in (errors or {}).items()
                }
                if isinstance(errors, dict)
                else {}
            )
            return ValidationError(message, errors=clean, **where)
        if status == 429:
            return RateLimitError(
                f"{message} (still rate limited after {self.retries} retries)", **where
            )
        if status >= 500:
            return ServerError(f"{message} (after {self.retries} retries)", **where)
        return MihuError(message, **where)

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    # ------------------------------------------------------------------ many pages

    def sessions(
        self,
        conversations: str | Iterable[str],
        *,
        status: str | Iterable[str] | None = None,
        type: str | Iterable[str] | None = None,
        sort_by: str = "created_at",
        sort_dir: str = "asc",
        per_page: int = 100,
        progress: bool | None = None,
        on_error: str = "raise",
        refresh: bool = False,
        offline: bool = False,
    ) -> pd.DataFrame:
        """Load every session of one or more conversations into one typed DataFrame.

        Each conversation's first page is fetched, then all later pages of every conversation
        concurrently on one pool of ``max_workers`` threads. Pages are decoded in batches with
        pyarrow as they arrive.

        Parameters
        ----------
        conversations : str or iterable of str
            Conversation UUIDs; duplicates are loaded once.
        status : {"active", "completed", "timed_out"}, list of them, or "all", optional
            Each value is its own query; rows carry the value in the ``status`` column.
        type : {"text", "voice"}, list of them, or "all", optional
            Likewise, into the ``type`` column.
        sort_by : {"created_at", "updated_at", "started_at", "last_activity_at"}
            The API's sort key. The default ``created_at`` with ``asc`` keeps pages stable while
            new sessions arrive.
        sort_dir : {"asc", "desc"}
        per_page : int
            1 to 100 (default 100: fewest requests).
        progress : bool, optional
            A tqdm progress bar counting pages; default: shown on a terminal or in Jupyter.
        on_error : {"raise", "warn", "skip"}
            With ``warn`` / ``skip``, a failing conversation is left out (whole, never half)
            and ``df.attrs["mihu_frames"]["errors"]`` lists what failed; ``warn`` also warns.
        refresh : bool
            Bypass the cache for this call (responses are still saved).
        offline : bool
            Serve only from the cache; a missing page raises :class:`CacheMissError`.

        Returns
        -------
        pandas.DataFrame
            One row per session in the documented schema. ``df.attrs["mihu_frames"]`` records
            requests, retries, cache hits, pages, seconds and errors.

        Raises
        ------
        ValueError
            A bad argument, before any request is sent.
        MihuError
            With ``on_error="raise"``, the first failure (a subclass says which kind).
        """
        from mihu_frames.pages import Plan, fetch_frame

        if offline and self.cache_path is None:
            raise ValueError("offline=True needs a cache; this client has cache=None")
        plan = Plan.build(
            conversations,
            status=status,
            type=type,
            sort_by=sort_by,
            sort_dir=sort_dir,
            per_page=per_page,
            on_error=on_error,
        )
        if progress is not None and not isinstance(progress, bool):
            raise ValueError(f"progress must be True, False or None, got {progress!r}")
        return fetch_frame(self, plan, progress=progress, refresh=refresh, offline=offline)


def _save_pages(
    path: Path, expire_after: Any, pages: list[PageResponse], headers: Mapping[str, str]
) -> None:
    """Background job: save validated pages with a requests-cache session of its own."""
    if not path.exists():  # removed since the load: never re-create it (with default modes)
        logger.info("not saving %d pages: %s no longer exists", len(pages), path)
        return
    try:
        session = _cached_session(path, expire_after, read_only=False)
    except (sqlite3.Error, OSError) as exc:
        logger.warning("could not open %s to save %d pages: %s", path, len(pages), exc)
        return
    try:
        cache = session.cache  # type: ignore[attr-defined]
        with cache.responses.bulk_commit():
            for page in pages:
                response = page.response
                if isinstance(response, _Fetched):
                    response = response.cached(headers)
                cache.save_response(response, cache_key=page.cache_key, expires=page.expires)
    except (sqlite3.Error, OSError) as exc:  # only a cache: the load itself had its pages
        logger.warning("could not save %d pages to %s: %s", len(pages), path, exc)
    finally:
        session.close()


@dataclass(frozen=True)
class _Fetched:
    """A page fetched on the urllib3 pool, until requests-cache stores it."""

    url: str
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def cached(self, request_headers: Mapping[str, str]) -> Any:
        """The ``CachedResponse`` requests-cache would have made of this reply (the request
        is recorded without its Authorization header, which ``ignored_parameters`` would drop
        anyway)."""
        from requests_cache.models import CachedRequest, CachedResponse

        request = CachedRequest(
            method="GET",
            url=self.url,
            headers=CaseInsensitiveDict(
                {k: v for k, v in request_headers.items() if k.lower() != "authorization"}
            ),
        )
        headers = CaseInsensitiveDict(self.headers)
        return CachedResponse(
            content=self.body,
            encoding=requests.utils.get_encoding_from_headers(headers),
            headers=headers,
            reason=self.reason,
            request=request,
            status_code=self.status,
            url=self.url,
        )


def _pool_manager(
    base_url: str, adapter: HTTPAdapter, proxies: dict[str, str], bundle: str | None
) -> urllib3.PoolManager:
    """A urllib3 pool manager with requests' proxy choice and CA bundle for ``base_url``."""
    tls: dict[str, Any] = {}
    if base_url.startswith("https:"):
        tls = {"cert_reqs": "CERT_REQUIRED"}
        if bundle and os.path.isdir(bundle):  # a c_rehash'ed folder, as requests accepts
            tls["ca_cert_dir"] = bundle
        else:
            tls["ca_certs"] = bundle or requests.certs.where()
    proxy = requests.utils.select_proxy(base_url, proxies)
    if proxy:
        return adapter.proxy_manager_for(proxy, **tls)
    return urllib3.PoolManager(num_pools=2, maxsize=adapter._pool_maxsize, **tls)


def _configure(
    session: requests.Session, adapter: HTTPAdapter, proxies: dict[str, str], bundle: str | None
) -> None:
    """Mount the retrying adapter and fix the environment's proxy and CA bundle on ``session``.

    With ``trust_env`` on, requests re-reads the environment for every request (a measurable
    share of a cached page's cost) and lets a ``~/.netrc`` entry replace our Authorization
    header; reading it once (in the client) keeps the same proxies and CA bundle without either.
    """
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.proxies.update(proxies)
    if bundle:
        session.verify = bundle
    session.trust_env = False


def _cached_session(path: Path, expire_after: Any, *, read_only: bool = True) -> requests.Session:
    import requests_cache

    return requests_cache.CachedSession(
        str(path),
        backend="sqlite",
        wal=True,
        expire_after=expire_after,
        allowable_codes=(200,),
        allowable_methods=("GET",),
        ignored_parameters=("Authorization",),
        key_fn=page_key,
        # Pages are written by MihuClient.store after validation, never while fetching.
        read_only=read_only,
        stale_if_error=False,
    )


def page_key(request: requests.PreparedRequest, **_: Any) -> str:
    """requests-cache ``key_fn``: a page is its method and URL (which holds every parameter).

    Headers never vary a page, and the URL is built by us in a fixed order, so the general
    normalisation requests-cache does by default is not needed (it costs ~0.5 ms a request).
    """
    return url_key(request.url or "", request.method or "GET")


def url_key(url: str, method: str = "GET") -> str:
    """The cache key of a request for ``url`` (see :func:`page_key`)."""
    return hashlib.sha256(f"{method} {url}".encode()).hexdigest()[:32]


def _check_not_locked(path: Path, timeout: float) -> None:
    """Fail clearly when another process holds the cache file's write lock for ``timeout`` s.

    requests-cache retries a locked write without end; asking once, with a deadline, turns a
    hang into an error that names the file.
    """
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        db.execute("begin immediate")
        db.execute("rollback")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise CacheLockedError(
            f"the cache file {path} is locked by another process (waited {timeout:g} s); "
            "close it there, or use another cache= path"
        ) from None
    finally:
        db.close()


def _move_aside(path: Path) -> Path:
    """Rename a damaged cache file (and its -wal/-shm) out of the way; return the new name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{aside}{suffix}"))
    return aside


def _create_private_file(path: Path) -> None:
    """Create the cache file (and its folder) readable by the owner only, before SQLite does.

    SQLite gives its -wal and -shm files the database file's permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    for suffix in ("", "-wal", "-shm"):
        candidate = Path(f"{path}{suffix}")
        if candidate.exists():
            os.chmod(candidate, 0o600)


def _served_at(date: str | None, created: datetime | None = None) -> datetime:
    """When the API produced this page: its ``Date`` header (the same clock as the sessions'
    timestamps, and the same value whether the page comes fresh or from the cache)."""
    if date:
        try:
            served = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            served = None
        if served is not None and served.tzinfo is not None:
            return served.astimezone(timezone.utc)
    return created if isinstance(created, datetime) else datetime.now(timezone.utc)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _plain_text(body: bytes, reason: str | None) -> str:
    text = body.decode("utf-8", errors="replace")
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
    return type(exc).__name__ + (f": {type(reason).__name__}" if reason is not None else "")
