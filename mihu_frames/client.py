"""The public facade: :class:`MihuClient` holds a transport, a cache file and a page runner.

A client is built from :class:`~mihu_frames.options.ClientOptions`; every load it runs is
validated into a :class:`~mihu_frames.runner.Plan` before any request is sent, served whole
from a stored result when an identical one is cached, else run by the
:class:`~mihu_frames.runner.PageRunner`, and handed back as a pandas frame with its record in
``df.attrs["mihu_frames"]``. Everything below this module is internal.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pyarrow as pa
from typing_extensions import Unpack

from mihu_frames._version import __version__
from mihu_frames.cachefile import CacheFile, default_cache_path
from mihu_frames.decoding.conversations import union_listings
from mihu_frames.errors import AuthenticationError
from mihu_frames.option_types import ClientSettings, ConversationsKwargs, SessionsKwargs
from mihu_frames.options import (
    LISTING_LOAD_OPTIONS,
    ClientOptions,
    ListingFilters,
    LoadOptions,
    OutputOptions,
    conversation_ids,
    split_options,
    takes,
    wants_all,
)
from mihu_frames.pacing import Pacer
from mihu_frames.runner import FullListing, PageRunner, Paging, Plan, RunStats
from mihu_frames.schema import (
    SCHEMA_VERSION,
    conversations_to_pandas,
    conversations_to_polars,
    to_pandas,
    to_polars,
)
from mihu_frames.started import StartedWindow, window_options
from mihu_frames.transport import Transport, resolve_base_url

logger = logging.getLogger("mihu_frames")


@takes((ClientOptions, None))
class MihuClient:
    """A client for the Mihu AI API: one address, one token, one cache file, one pool.

    Parameters
    ----------
    <options>

    Examples
    --------
    >>> import mihu_frames as mf
    >>> with mf.MihuClient(subdomain="acme") as client:           # doctest: +SKIP
    ...     df = client.sessions(["3c90c3cc-0d44-4b50-8888-8dd25736052a"], status="all")
    """

    @takes((ClientOptions, None))
    def __init__(self, base_url: str | None = None, **options: Unpack[ClientSettings]) -> None:
        (given,) = split_options(options, ClientOptions)
        settings = ClientOptions(base_url=base_url, **given)
        self.base_url = resolve_base_url(settings.base_url, settings.subdomain)
        token = settings.token if settings.token is not None else os.environ.get("MIHU_API_TOKEN")
        if token is not None and not token.strip():
            raise ValueError("token must be a non-empty string (MIHU_API_TOKEN is empty)")
        # The token lives in the transport's headers and nowhere else.
        self.options = replace(settings, token=None)
        self._has_token = bool(token)
        self.pacer = Pacer()
        self.transport = Transport(
            self.base_url,
            token,
            max_workers=settings.max_workers,
            timeout=settings.timeout,
            retries=settings.retries,
            backoff_factor=settings.backoff_factor,
            max_page_bytes=settings.max_page_bytes,
            pacer=self.pacer,
        )
        self.cache: CacheFile | None = None
        if settings.cache is not None:
            path = default_cache_path() if settings.cache == "default" else Path(settings.cache)
            self.cache = CacheFile(
                path, expire_after=settings.expire_after, timeout=settings.timeout
            )
        self.runner = PageRunner(self.transport, self.cache, settings.max_workers)

    @property
    def cache_path(self) -> Path | None:
        """The cache file, or None without a cache."""
        return self.cache.path if self.cache is not None else None

    @property
    def max_workers(self) -> int:
        return self.options.max_workers

    def __repr__(self) -> str:
        cache = str(self.cache_path) if self.cache_path else None
        token = "set" if self._has_token else "none"
        return f"MihuClient(base_url={self.base_url!r}, cache={cache!r}, token={token})"

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("MihuClient holds a live session and a secret; it cannot be pickled")

    def __enter__(self) -> MihuClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and let go of the cache file.

        A load hands its frame back before its pages and result are saved; those writes still
        finish after ``close()`` (the interpreter's exit waits for them), and every later read
        of the file waits for them. :meth:`flush_cache` waits explicitly.
        """
        self.transport.close()
        if self.cache is not None:
            self.cache.close()

    def flush_cache(self) -> None:
        """Wait until the cache writes started on this client's cache file are done."""
        if self.cache is not None:
            self.cache.flush()

    def clear_cache(self) -> None:
        """Empty this client's cache file: every page and every stored load."""
        if self.cache is not None:
            self.cache.clear()

    # ------------------------------------------------------------------ loads

    @takes((LoadOptions, None), (OutputOptions, None))
    def sessions(self, conversations: Any, **options: Unpack[SessionsKwargs]) -> pd.DataFrame:
        """Load every session of one or more conversations into one typed DataFrame.

        Each conversation's first page is fetched, then all later pages of every conversation
        concurrently on one pool of ``max_workers`` threads, paced by the server's rate-limit
        signals. Pages are decoded in batches with pyarrow as they arrive.

        Parameters
        ----------
        conversations : str, uuid.UUID, an iterable of them, a Series or DataFrame, or "all"
            Conversation UUIDs (duplicates are loaded once); a pandas Series of them, or a
            DataFrame with a ``uuid`` column (what :meth:`conversations` returns, filtered as
            you like); or ``"all"``: every conversation the account's listing returns now.
        <options>

        Returns
        -------
        pandas.DataFrame
            One row per session in the documented schema. ``df.attrs["mihu_frames"]``
            records requests, retries, cache hits, pages, 429s, seconds waited for the rate
            limit, fetch seconds and errors.

        Raises
        ------
        ValueError
            A bad argument, before any request is sent.
        MihuError
            With ``on_error="raise"``, the first failure (a subclass says which kind).

        Examples
        --------
        >>> df = client.sessions(["3c90c3cc-0d44-4b50-8888-8dd25736052a"])  # doctest: +SKIP
        """
        given, output = split_options(options, LoadOptions, OutputOptions)
        load, to = LoadOptions(**given), OutputOptions(**output).to
        window = StartedWindow.of(load) if load.windowed else None
        if window is not None:
            load = window_options(load, given)
        everything = wants_all(conversations)
        ids = () if everything else conversation_ids(conversations)
        if load.offline and self.cache is None:
            raise ValueError("offline=True needs a cache; this client has cache=None")
        self.require_token(load.offline)
        started = time.perf_counter()
        listed = None
        if everything:  # listed now (offline: as the cache holds it)
            listing, listed = self._listing({}, load) if load.offline else self.list_all(load)
            # to_pylist is typed as holding None; CONVERSATIONS_SCHEMA's uuid is not nullable
            ids = tuple(cast(list[str], listing.column("uuid").to_pylist()))
        plan = Plan.build(ids, load)
        table, stats = self._load(plan) if window is None else self._load_window(plan, window)
        if listed is not None:
            stats = listed.plus(stats)
        if to == "polars":  # from the Arrow table, not through pandas
            return to_polars(table)
        df = to_pandas(table)
        df.attrs["mihu_frames"] = self.record(plan, stats, time.perf_counter() - started)
        if window is not None:
            df.attrs["mihu_frames"]["filters"].update(window.describe())
        if everything:
            df.attrs["mihu_frames"]["listed"] = "all"
        logger.debug(
            "loaded %d sessions from %d pages (%d requests, %d cache hits, %d retries) in %.3fs",
            len(df),
            stats.pages,
            stats.requests,
            stats.cache_hits,
            stats.retries,
            df.attrs["mihu_frames"]["fetch_seconds"],
        )
        return df

    @takes((ListingFilters, None), (LoadOptions, LISTING_LOAD_OPTIONS), (OutputOptions, None))
    def conversations(self, **options: Unpack[ConversationsKwargs]) -> pd.DataFrame:
        """The account's conversations, one row each, from ``GET /api/v1/conversations``.

        The filters are sent to the server (never applied afterwards). The API takes one
        value per filter: a list of values is one listing per value (per combination, with
        several lists) and their union, each conversation once (``uuid``). Pages are fetched
        concurrently and cached like session pages, by the same runner and transport.

        Parameters
        ----------
        <options>

        Returns
        -------
        pandas.DataFrame
            ``uuid`` first; ``agent_uuid``, ``channel``, ``status``, ``phone``, the contact
            flattened (``contact_uuid``, ``contact_name`` ...), every ``*_at`` field as
            ``datetime64[us, UTC]``, ``sessions_count`` (``Int64``), anything else as JSON in
            ``extra``, and ``fetched_at``. Empty and typed for an account without any.

        Examples
        --------
        >>> convs = client.conversations(channel="whatsapp")          # doctest: +SKIP
        >>> df = client.sessions(convs[convs.sessions_count > 0])     # doctest: +SKIP
        """
        listing, rest = ListingFilters.take(options)
        filters = listing.params()
        given, output = split_options(rest, LoadOptions, OutputOptions)
        to = OutputOptions(**output).to
        unknown = set(given) - set(LISTING_LOAD_OPTIONS)
        if unknown:
            raise TypeError(f"a listing of conversations does not take {sorted(unknown)}")
        load = LoadOptions(**given)
        if load.offline and self.cache is None:
            raise ValueError("offline=True needs a cache; this client has cache=None")
        self.require_token(load.offline)
        started = time.perf_counter()
        # The API takes one value per filter: one listing per combination, then their union.
        queries = listing.queries()
        runs = [self._listing(params, load) for params in queries]
        table = union_listings([t for t, _ in runs])
        stats = functools.reduce(RunStats.plus, [s for _, s in runs])
        if to == "polars":
            return conversations_to_polars(table)
        df = conversations_to_pandas(table)
        record = self.record(Plan.listing(queries[0], load), stats, time.perf_counter() - started)
        record.pop("conversations")
        record["filters"] = filters
        df.attrs["mihu_frames"] = record
        return df

    def list_all(self, load: LoadOptions) -> tuple[pa.Table, RunStats]:
        """Every conversation of the account, listed now (fresh, never from the cache)."""
        return self._listing({}, replace(load, refresh=True, offline=False))

    def _listing(self, filters: dict[str, str], load: LoadOptions) -> tuple[pa.Table, RunStats]:
        """The conversations listing under ``filters`` (sorted by creation, oldest first: new
        conversations arriving while it is read land on its last page, not between pages)."""
        options = replace(load, status=None, type=None, sort_by="created_at", sort_dir="asc")
        paging = FullListing(label="mihu conversations", pages_alone=True)
        return self.run(Plan.listing(filters, options), paging)

    def _load(self, plan: Plan) -> tuple[pa.Table, RunStats]:
        """The table of a plan: a stored result when an identical one is cached, else a run."""
        load = plan.options
        key = self.load_key(plan)
        if self.cache is not None and not load.refresh:
            stored = self.cache.stored_load(key, offline=load.offline)
            if stored is not None:
                table, record = stored
                logger.debug("served the whole load from the stored result %s", key[:12])
                return table, RunStats(cache_hits=record["pages"], pages=record["pages"])
        table, stats = self.run(plan, FullListing())
        if self.cache is not None:
            if stats.errors:
                self.cache.invalidate(stats.fresh)
            else:
                self.cache.store_load(
                    key,
                    table,
                    conversations=plan.conversations,
                    fresh=stats.fresh,
                    listings=stats.listings,
                    meta={"pages": stats.pages, "expires": stats.expires},
                )
        return table, stats

    def _load_window(self, plan: Plan, window: StartedWindow) -> tuple[pa.Table, RunStats]:
        """The sessions of a plan started in ``window``: pages fresh, newest first, down to the
        window's start; never cached, no stored result (see :mod:`mihu_frames.started`)."""
        table, stats = self.run(plan, window)
        return window.keep(table, plan.conversations), stats

    def run(
        self, plan: Plan, paging: Paging, *, refresh: bool | None = None
    ) -> tuple[pa.Table, RunStats]:
        """Run ``plan`` under ``paging`` on this client's runner (no stored results)."""
        load = plan.options
        self.require_token(load.offline and paging.cached)
        table, stats = self.runner.run(
            plan,
            paging,
            refresh=load.refresh if refresh is None else refresh,
            offline=load.offline,
            progress=load.progress,
        )
        if stats.timestamps_out_of_range:
            warnings.warn(
                f"{stats.timestamps_out_of_range} timestamp(s) fall outside years 1-9999 once "
                "their offset is applied: loaded as null, their text kept in 'extra'",
                RuntimeWarning,
                stacklevel=3,
            )
        return table, stats

    def require_token(self, offline: bool) -> None:
        """Say, before anything else, that a load without a token cannot reach the API."""
        if not self._has_token and not offline:
            raise AuthenticationError(
                "no API token: set MIHU_API_TOKEN or pass token= (offline=True reads the "
                "cache without one)"
            )

    def load_key(self, plan: Plan) -> str:
        """What identifies a load's result: address, queries, sort, page size, versions."""
        spec = {
            "base_url": self.base_url,
            "queries": [(q.conversation, q.status, q.type) for q in plan.queries],
            "sort": [plan.sort_by, plan.sort_dir],
            "per_page": plan.per_page,
            "versions": [__version__, SCHEMA_VERSION],
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def record(self, plan: Plan, stats: RunStats, seconds: float) -> dict[str, Any]:
        """The load's record for ``df.attrs["mihu_frames"]``."""
        return {
            "base_url": self.base_url,
            "conversations": list(plan.conversations),
            "filters": plan.describe(),
            "requests": stats.requests,
            "retries": stats.retries,
            "cache_hits": stats.cache_hits,
            "pages": stats.pages,
            "rate_limited": stats.rate_limited,
            "waited_seconds": stats.waited_seconds,
            "timestamps_out_of_range": stats.timestamps_out_of_range,
            "fetch_seconds": round(seconds, 6),
            "loaded_at": datetime.now(timezone.utc).isoformat(),
            "errors": stats.errors,
        }
