"""The plan of a run: the queries a load reads, and where their pages come from.

A :class:`Plan` is a validated load: one :class:`Query` per paginated listing (a conversation
under one status and one type value, or the account's conversations under filters), the
options that shape their requests, and the :class:`Endpoint` their pages come from.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from mihu_frames.decoding import PageEnvelope, decode_pages
from mihu_frames.decoding.conversations import decode_conversation_pages
from mihu_frames.options import LoadOptions
from mihu_frames.schema import CONVERSATIONS_SCHEMA, SESSIONS_SCHEMA

SESSIONS_PATH = "/api/v1/conversations/{uuid}/sessions"
CONVERSATIONS_PATH = "/api/v1/conversations"


@dataclass(frozen=True, kw_only=True)
class Query:
    """One paginated listing: a conversation's sessions under one status and one type value,
    or (``conversation`` empty) the account's conversations under ``filters``.

    Every part is required and named: a query fetched anew is :meth:`renumbered`, never
    rebuilt from some of its parts (a restarted listing once lost its filters that way).
    """

    index: int
    conversation: str
    status: str | None
    type: str | None
    filters: tuple[tuple[str, str], ...]

    def renumbered(self, index: int) -> Query:
        """The same listing under another index (fetched anew), every other part kept."""
        return replace(self, index=index)

    def params(self, page: int, plan: Plan) -> dict[str, str | int]:
        params: dict[str, str | int] = {
            "page": page,
            "per_page": plan.per_page,
            "sort_by": plan.sort_by,
            "sort_dir": plan.sort_dir,
        }
        if self.status is not None:
            params["status"] = self.status
        if self.type is not None:
            params["type"] = self.type
        params.update(self.filters)
        return params


@dataclass(frozen=True)
class Endpoint:
    """Where a plan's pages come from and how their bodies decode."""

    #: The path, with ``{uuid}`` for the conversation of a per-conversation listing.
    path: str
    decode: Callable[..., tuple[pa.Table, list[PageEnvelope]]]
    #: The columns of a run that found nothing.
    schema: pa.Schema


SESSIONS = Endpoint(SESSIONS_PATH, decode_pages, SESSIONS_SCHEMA)
CONVERSATIONS = Endpoint(CONVERSATIONS_PATH, decode_conversation_pages, CONVERSATIONS_SCHEMA)


@dataclass(frozen=True)
class Plan:
    """A validated load: the queries, and the options that shape their requests."""

    conversations: tuple[str, ...]
    queries: tuple[Query, ...]
    options: LoadOptions
    endpoint: Endpoint = SESSIONS

    @classmethod
    def build(cls, conversations: Sequence[str], options: LoadOptions) -> Plan:
        """The sessions of ``conversations``: one query per status and type value."""
        combos = itertools.product(conversations, options.statuses, options.types)
        queries = tuple(
            Query(index=i, conversation=c, status=s, type=t, filters=())
            for i, (c, s, t) in enumerate(combos)
        )
        return cls(tuple(conversations), queries, options)

    @classmethod
    def listing(cls, filters: dict[str, str], options: LoadOptions) -> Plan:
        """The account's conversations, under ``filters`` (sent to the server)."""
        query = Query(
            index=0, conversation="", status=None, type=None, filters=tuple(sorted(filters.items()))
        )
        return cls((), (query,), options, CONVERSATIONS)

    @property
    def per_page(self) -> int:
        return self.options.per_page

    @property
    def sort_by(self) -> str:
        return self.options.sort_by

    @property
    def sort_dir(self) -> str:
        return self.options.sort_dir

    def describe(self) -> dict[str, Any]:
        """The filters, for ``df.attrs`` and snapshot metadata."""
        return {
            "status": [s for s in self.options.statuses if s is not None] or None,
            "type": [t for t in self.options.types if t is not None] or None,
            "sort_by": self.sort_by,
            "sort_dir": self.sort_dir,
            "per_page": self.per_page,
        }


def named(query: Query) -> str:
    """How the log names a query: its conversation, with its status and type if any."""
    tags = [t for t in (query.status, query.type) if t is not None]
    return f"conversation {query.conversation}" + (f" ({', '.join(tags)})" if tags else "")
