"""The one-call form: ``load_sessions(conversations, **options)``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import pandas as pd

from mihu_frames.client import MihuClient

_CLIENT_OPTIONS = frozenset(inspect.signature(MihuClient.__init__).parameters) - {"self"}
_LOAD_OPTIONS = frozenset(inspect.signature(MihuClient.sessions).parameters) - {
    "self",
    "conversations",
}


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword options into client options and load options; reject unknown names."""
    unknown = set(options) - _CLIENT_OPTIONS - _LOAD_OPTIONS
    if unknown:
        known = ", ".join(sorted(_CLIENT_OPTIONS | _LOAD_OPTIONS))
        raise TypeError(f"unknown option(s) {sorted(unknown)}; known options: {known}")
    client = {k: v for k, v in options.items() if k in _CLIENT_OPTIONS}
    load = {k: v for k, v in options.items() if k in _LOAD_OPTIONS}
    return client, load


def load_sessions(conversations: str | Iterable[str], **options: Any) -> pd.DataFrame:
    """Load every session of one or more conversations in one call.

    Takes the options of :class:`MihuClient` (``base_url``, ``subdomain``, ``token``,
    ``cache``, ``expire_after``, ``max_workers``, ``timeout``, ``retries``, ``backoff_factor``)
    and of :meth:`MihuClient.sessions` (``status``, ``type``, ``sort_by``, ``sort_dir``,
    ``per_page``, ``progress``, ``on_error``, ``refresh``, ``offline``).

    Parameters
    ----------
    conversations : str or iterable of str
        Conversation UUIDs.
    **options
        Client and load options, as above.

    Returns
    -------
    pandas.DataFrame
        One row per session in the documented schema.

    Examples
    --------
    >>> import mihu_frames as mf
    >>> df = mf.load_sessions(["3c90c3cc-0d44-4b50-8888-8dd25736052a"],
    ...                       subdomain="acme", status="all")          # doctest: +SKIP
    """
    client_options, load_options = split_options(options)
    with MihuClient(**client_options) as client:
        return client.sessions(conversations, **load_options)
