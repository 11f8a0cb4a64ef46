"""The one-call form: ``load_sessions(conversations, **options)``."""

from __future__ import annotations

from typing import Any

import pandas as pd
from typing_extensions import Unpack

from mihu_frames.client import MihuClient
from mihu_frames.option_types import ListConversationsKwargs, LoadSessionsKwargs
from mihu_frames.options import (
    LISTING_LOAD_OPTIONS,
    ClientOptions,
    ListingFilters,
    LoadOptions,
    OutputOptions,
    split_options,
    takes,
)


@takes((LoadOptions, None), (OutputOptions, None), (ClientOptions, None))
def load_sessions(conversations: Any, **options: Unpack[LoadSessionsKwargs]) -> pd.DataFrame:
    """Load every session of one or more conversations in one call.

    Builds a :class:`MihuClient` from the client options, runs
    :meth:`MihuClient.sessions` with the load options, and closes the client. For many loads,
    keep one client (one cache file, one connection pool).

    Parameters
    ----------
    conversations : str, uuid.UUID, an iterable of them, a Series or DataFrame, or "all"
        Conversation UUIDs; a pandas Series of them or a DataFrame with a ``uuid`` column (as
        :func:`list_conversations` returns); or ``"all"``: every conversation of the account
        that its listing returns now.
    <options>

    Returns
    -------
    pandas.DataFrame
        One row per session in the documented schema; ``df.attrs["mihu_frames"]`` records
        what the load cost.

    Examples
    --------
    >>> import mihu_frames as mf
    >>> df = mf.load_sessions(["3c90c3cc-0d44-4b50-8888-8dd25736052a"],
    ...                       subdomain="acme", status="all")          # doctest: +SKIP
    >>> week = mf.load_sessions("all", since="2026-10-25", until="2026-11-01",
    ...                         subdomain="acme")                      # doctest: +SKIP
    """
    load, output, client = split_options(options, LoadOptions, OutputOptions, ClientOptions)
    with MihuClient(**client) as session:
        return session.sessions(conversations, **load, **output)


@takes(
    (ListingFilters, None),
    (LoadOptions, LISTING_LOAD_OPTIONS),
    (OutputOptions, None),
    (ClientOptions, None),
)
def list_conversations(**options: Unpack[ListConversationsKwargs]) -> pd.DataFrame:
    """The account's conversations in one call, one row each.

    Builds a :class:`MihuClient` from the client options, runs
    :meth:`MihuClient.conversations` and closes the client. The filters are sent to the server.

    Parameters
    ----------
    <options>

    Returns
    -------
    pandas.DataFrame
        ``uuid`` first, typed fields, every ``*_at`` field as ``datetime64[us, UTC]``, anything
        else in ``extra`` (see :meth:`MihuClient.conversations`).

    Examples
    --------
    >>> import mihu_frames as mf
    >>> convs = mf.list_conversations(channel="whatsapp", subdomain="acme")  # doctest: +SKIP
    >>> df = mf.load_sessions(convs[convs.status == "open"], subdomain="acme")  # doctest: +SKIP
    """
    filters, rest = ListingFilters.take(options)
    load, output, client = split_options(rest, LoadOptions, OutputOptions, ClientOptions)
    with MihuClient(**client) as session:
        return session.conversations(**vars(filters), **load, **output)
