"""The one-call form: ``load_sessions(conversations, **options)``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mihu_frames.client import MihuClient
from mihu_frames.options import ClientOptions, LoadOptions, split_options, takes


@takes((LoadOptions, None), (ClientOptions, None))
def load_sessions(conversations: Any, **options: Any) -> pd.DataFrame:
    """Load every session of one or more conversations in one call.

    Builds a :class:`MihuClient` from the client options, runs
    :meth:`MihuClient.sessions` with the load options, and closes the client. For many loads,
    keep one client (one cache file, one connection pool).

    Parameters
    ----------
    conversations : str, uuid.UUID, or an iterable of them
        Conversation UUIDs.
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
    """
    load, client = split_options(options, LoadOptions, ClientOptions)
    with MihuClient(**client) as session:
        return session.sessions(conversations, **load)
