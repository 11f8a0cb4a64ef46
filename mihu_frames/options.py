"""Every option of the library, declared once, with its default, its documentation and its flag.

Two dataclasses hold them: :class:`ClientOptions` (where the API is and how to talk to it) and
:class:`LoadOptions` (what a load asks for). Their fields are the single declaration; from
them come

- each public function's signature (:func:`takes`): ``load_sessions``, ``MihuClient``,
  ``MihuClient.sessions``, ``sync_snapshots`` and ``list_conversations`` show their options in
  Jupyter's Shift-Tab, with defaults, though the code takes them as ``**options``;
- the ``Parameters`` entries of their numpy-style docstrings;
- the command line's flags (``mihu_frames.cli``), each command taking only what applies;
- validation, in each dataclass's ``__post_init__``: a bad value is a ``ValueError`` before
  any request is sent.
"""

from __future__ import annotations

import inspect
import itertools
import math
import textwrap
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from mihu_frames.schema import (
    SORT_BY_VALUES,
    SORT_DIR_VALUES,
    STATUS_VALUES,
    TYPE_VALUES,
    UUID_RE,
)

F = TypeVar("F", bound=Callable[..., Any])

ON_ERROR_VALUES = ("raise", "warn", "skip")
DEFAULT_EXPIRE_AFTER = timedelta(hours=1)
DEFAULT_MAX_PAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PAGES = 100_000
#: How far before the newest held ``updated_at`` an incremental sync goes on reading.
DEFAULT_OVERLAP = timedelta(minutes=5)


def option(default: Any, doc: str, *, kind: str, cli: dict[str, Any] | None = None) -> Any:
    """A dataclass field carrying its documentation (``kind``: the numpy-style type line) and,
    when the command line takes it, its argparse keywords (``cli``; ``flag`` is the name)."""
    return field(default=default, metadata={"doc": doc, "kind": kind, "cli": cli})


@dataclass(frozen=True)
class ClientOptions:
    """Where the API is and how to talk to it (the arguments of :class:`MihuClient`)."""

    base_url: str | None = option(
        None,
        "``https://{subdomain}.mihu.ai``; default ``MIHU_BASE_URL``. A trailing ``/api/v1`` "
        "is accepted.",
        kind="str, optional",
        cli={"flag": "--base-url", "help": "API base URL (default: MIHU_BASE_URL)"},
    )
    subdomain: str | None = option(
        None,
        "Instead of ``base_url``; default ``MIHU_SUBDOMAIN``.",
        kind="str, optional",
        cli={"flag": "--subdomain", "help": "instead of --base-url: https://SUBDOMAIN.mihu.ai"},
    )
    token: str | None = option(
        None,
        "Bearer token; default ``MIHU_API_TOKEN``. Never logged, cached, written or shown. "
        "A load without one is refused, unless ``offline=True``.",
        kind="str, optional",
    )
    cache: Any = option(
        "default",
        '``"default"``: a SQLite file in the user cache directory; a path: that file; '
        "``None``: no cache. It holds contact data and is created owner-only.",
        kind='"default", str, Path or None',
        cli={"flag": "--cache", "help": "cache file (default: the user cache directory)"},
    )
    expire_after: timedelta | float | None = option(
        DEFAULT_EXPIRE_AFTER,
        "How long a cached page stays fresh (default one hour; ``None``: forever).",
        kind="timedelta, float seconds or None",
    )
    max_workers: int = option(
        8,
        "Most requests in flight at once, across all conversations (the server's rate "
        "limits may hold it lower).",
        kind="int",
        cli={"flag": "--max-workers", "type": int, "help": "most requests in flight (default 8)"},
    )
    timeout: float = option(
        30.0,
        "Seconds for each whole response: connecting and every read together.",
        kind="float",
        cli={"flag": "--timeout", "type": float, "help": "seconds per response (default 30)"},
    )
    retries: int = option(
        5,
        "Retries per request for 429, 5xx, dropped connections and timeouts.",
        kind="int",
        cli={"flag": "--retries", "type": int, "help": "retries per request (default 5)"},
    )
    backoff_factor: float = option(
        0.5,
        "urllib3's backoff between retries without ``Retry-After`` (0.5 s, doubling).",
        kind="float",
    )
    max_page_bytes: int = option(
        DEFAULT_MAX_PAGE_BYTES,
        "The largest response accepted, decoded (default 32 MiB, about 300 full pages).",
        kind="int",
    )

    def __post_init__(self) -> None:
        _positive_int("max_workers", self.max_workers)
        _positive_int("max_page_bytes", self.max_page_bytes)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self.retries!r}")
        for name in ("timeout", "backoff_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{name} must be a number of seconds, got {value!r}")
        if self.timeout <= 0 or math.isinf(self.timeout):
            raise ValueError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.backoff_factor < 0:
            raise ValueError(f"backoff_factor must be >= 0, got {self.backoff_factor!r}")
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ValueError("token must be a non-empty string")
        expire = self.expire_after
        if not (expire is None or isinstance(expire, timedelta) or _seconds_value(expire)):
            raise ValueError(f"expire_after must be a timedelta or seconds, got {expire!r}")
        seconds = expire.total_seconds() if isinstance(expire, timedelta) else expire
        if seconds is not None and not 0 <= seconds <= _LONGEST_EXPIRY:
            raise ValueError(
                f"expire_after must be between 0 and 1000 years (None: pages never expire), "
                f"got {expire!r}"
            )


@dataclass(frozen=True)
class LoadOptions:
    """What a load asks for (the options of :meth:`MihuClient.sessions`)."""

    status: str | Sequence[str] | None = option(
        None,
        "Each value is its own query; rows carry the value they were fetched under in the "
        '``status`` column (``"all"``: every value). Without it ``status`` is null.',
        kind='{"active", "completed", "timed_out"}, list of them, or "all", optional',
        cli={
            "flag": "--status",
            "action": "append",
            "metavar": "STATUS",
            "help": "active, completed, timed_out or all; repeat the flag or use commas",
        },
    )
    type: str | Sequence[str] | None = option(
        None,
        "Likewise, into the ``type`` column.",
        kind='{"text", "voice"}, list of them, or "all", optional',
        cli={
            "flag": "--type",
            "action": "append",
            "metavar": "TYPE",
            "help": "text, voice or all; repeat the flag or use commas",
        },
    )
    sort_by: str = option(
        "created_at",
        "The API's sort key. The default ``created_at`` with ``asc`` keeps pages stable "
        "while new sessions arrive.",
        kind='{"created_at", "updated_at", "started_at", "last_activity_at"}',
        cli={"flag": "--sort-by", "choices": SORT_BY_VALUES, "help": "sort key"},
    )
    sort_dir: str = option(
        "asc",
        "Sort direction.",
        kind='{"asc", "desc"}',
        cli={"flag": "--sort-dir", "choices": SORT_DIR_VALUES, "help": "sort direction"},
    )
    per_page: int = option(
        100,
        "1 to 100 (default 100: fewest requests).",
        kind="int",
        cli={"flag": "--per-page", "type": int, "help": "sessions per page, 1-100 (default 100)"},
    )
    progress: bool | None = option(
        None,
        "A progress bar counting pages; default: shown on a terminal or in Jupyter.",
        kind="bool, optional",
        cli={"flag": "--progress", "action": "bool", "help": "show a progress bar"},
    )
    on_error: str = option(
        "raise",
        "With ``warn`` / ``skip`` a failing conversation is left out (whole, never half) and "
        '``df.attrs["mihu_frames"]["errors"]`` lists what failed; ``warn`` also warns.',
        kind='{"raise", "warn", "skip"}',
        cli={
            "flag": "--on-error",
            "choices": ON_ERROR_VALUES,
            "help": "raise (default), or warn/skip: leave failing conversations out",
        },
    )
    refresh: bool = option(
        False,
        "Bypass the cache for this call (responses are still saved).",
        kind="bool",
        cli={"flag": "--refresh", "action": "store_true", "help": "bypass the cache"},
    )
    offline: bool = option(
        False,
        "Serve only from the cache (expired pages too); a missing page raises "
        ":class:`CacheMissError`. Needs no token.",
        kind="bool",
        cli={"flag": "--offline", "action": "store_true", "help": "serve only from the cache"},
    )
    max_pages: int = option(
        DEFAULT_MAX_PAGES,
        "A sanity cap on pages per conversation: a server claiming more is a "
        ":class:`ResponseFormatError` before those requests are sent.",
        kind="int",
    )
    deadline: float | timedelta | None = option(
        None,
        "Bound the whole load (seconds): past it, :class:`DeadlineExceededError`.",
        kind="float seconds or timedelta, optional",
        cli={"flag": "--deadline", "type": float, "metavar": "SECONDS", "help": "bound the load"},
    )
    since: Any = option(
        None,
        "Only the sessions started at or after this instant (``started_at >= since``). Pages "
        "are read newest first (``started_at`` descending) and reading stops at the first page "
        "older than ``since``: the cost follows the window, not the history. A naive value or "
        "a date is UTC. Rows come oldest first per conversation; sessions without "
        "``started_at`` are left out; pages are read fresh and never cached.",
        kind="str, datetime, date or pandas.Timestamp, optional",
        cli={
            "flag": "--since",
            "metavar": "WHEN",
            "help": "only sessions started at or after WHEN (ISO date or time; naive: UTC)",
        },
    )
    until: Any = option(
        None,
        "Only the sessions started before this instant (``started_at < until``); with "
        "``since`` the window is [since, until). Same forms as ``since``. Alone it reads every "
        "page (a full load's cost).",
        kind="str, datetime, date or pandas.Timestamp, optional",
        cli={
            "flag": "--until",
            "metavar": "WHEN",
            "help": "only sessions started before WHEN (ISO date or time; naive: UTC)",
        },
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", filter_values("status", self.status, STATUS_VALUES))
        object.__setattr__(self, "type", filter_values("type", self.type, TYPE_VALUES))
        one_of("sort_by", self.sort_by, SORT_BY_VALUES)
        one_of("sort_dir", self.sort_dir, SORT_DIR_VALUES)
        one_of("on_error", self.on_error, ON_ERROR_VALUES)
        per_page = self.per_page
        if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 100:
            raise ValueError(f"per_page must be an integer from 1 to 100, got {per_page!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True, False or None, got {self.progress!r}")
        for name in ("refresh", "offline"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _positive_int("max_pages", self.max_pages)
        deadline = self.deadline
        if isinstance(deadline, timedelta):
            deadline = deadline.total_seconds()
        if deadline is not None and (
            isinstance(deadline, bool)
            or not isinstance(deadline, (int, float))
            or not deadline > 0
            or math.isinf(deadline)
        ):
            raise ValueError(
                f"deadline must be a positive number of seconds, got {self.deadline!r}"
            )
        object.__setattr__(self, "deadline", deadline)
        since, until = instant("since", self.since), instant("until", self.until)
        if since is not None and until is not None and since > until:
            raise ValueError(
                f"since ({since.isoformat()}) is after until ({until.isoformat()}): the window "
                "[since, until) would be reversed"
            )
        if self.offline and (since is not None or until is not None):
            raise ValueError(
                "since/until read pages fresh, newest first, and offline=True serves only the "
                "cache: drop offline=True, or load offline without since/until and select on "
                "started_at"
            )
        object.__setattr__(self, "since", since)
        object.__setattr__(self, "until", until)

    @property
    def windowed(self) -> bool:
        """``since`` or ``until`` is given: the load reads a window of ``started_at``."""
        return self.since is not None or self.until is not None

    @property
    def statuses(self) -> tuple[str | None, ...]:
        return self.status  # type: ignore[return-value]

    @property
    def types(self) -> tuple[str | None, ...]:
        return self.type  # type: ignore[return-value]


#: The load options a sync takes (it sorts and caches its own way).
SYNC_LOAD_OPTIONS = ("status", "type", "per_page", "progress", "on_error", "max_pages", "deadline")


@dataclass(frozen=True)
class SyncOptions:
    """What a sync of a snapshot root does beyond a load (the options of ``sync_snapshots``)."""

    full: bool = option(
        False,
        "Re-read every conversation in full: the way to notice deleted sessions, which an "
        "incremental read cannot see. They are reported, not removed.",
        kind="bool",
        cli={
            "flag": "--full",
            "action": "store_true",
            "help": "re-read everything (sees deletions)",
        },
    )
    refetch: bool = option(
        False,
        "Fetch every conversation anew (as ``full``) under ``status``/``type`` filters other "
        "than the ones the root recorded, and record them. Without it such a sync is refused.",
        kind="bool",
        cli={
            "flag": "--refetch",
            "action": "store_true",
            "help": "re-fetch everything under new --status/--type filters, and record them",
        },
    )
    overlap: timedelta | float = option(
        DEFAULT_OVERLAP,
        "How far before the newest ``updated_at`` held to keep reading (default five minutes): "
        "covers equal timestamps, clock skew, and sessions updated while a sync runs.",
        kind="timedelta or float seconds",
        cli={
            "flag": "--overlap",
            "type": float,
            "metavar": "SECONDS",
            "help": "re-read this far before the newest update held (default 300)",
        },
    )
    pii: str | None = option(
        None,
        '``"hash"``: contact name, surname, phone and e-mail are written as keyed hashes '
        "(key in ``MIHU_PII_KEY``).",
        kind='{None, "hash"}',
        cli={"flag": "--pii", "choices": ("hash",), "help": "hash contact columns (MIHU_PII_KEY)"},
    )

    def __post_init__(self) -> None:
        for name in ("full", "refetch"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.pii not in (None, "hash"):
            raise ValueError(f"pii must be None or 'hash', got {self.pii!r}")
        overlap = self.overlap
        if isinstance(overlap, timedelta):
            window = overlap
        elif _seconds_value(overlap) and not math.isinf(overlap):
            window = timedelta(seconds=overlap)
        else:
            raise ValueError(f"overlap must be a finite timedelta or seconds, got {overlap!r}")
        if window < timedelta(0):
            raise ValueError(f"overlap must be zero or positive, got {overlap!r}")
        object.__setattr__(self, "overlap", window)


# --------------------------------------------------------------------------- values


def filter_values(
    name: str, value: str | Iterable[str] | None, allowed: tuple[str, ...]
) -> tuple[str | None, ...]:
    """A filter argument as the tuple of values to query (``(None,)``: no filter)."""
    if value is None or value == (None,):
        return (None,)
    if isinstance(value, tuple) and value and all(v in allowed for v in value):
        return value  # already normalised
    if value == "all":
        return allowed
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, Iterable)):
        raise ValueError(f"{name} must be a string, a list of strings or 'all', got {value!r}")
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise ValueError(f"{name} must not be an empty list (use None for no filter)")
    for v in values:
        one_of(name, v, allowed)
    return tuple(dict.fromkeys(values))


#: Words pandas reads as an instant on the local clock; a window names its instants.
_RELATIVE_WORDS = ("now", "today", "yesterday", "tomorrow")


def instant(name: str, value: object) -> datetime | None:
    """``value`` as an aware UTC ``datetime`` (None stays None), else ``ValueError`` naming
    ``name``.

    Takes an ISO 8601 string, a ``datetime``, a ``date`` (midnight) or a ``pandas.Timestamp``;
    a naive value is UTC, as everywhere in the library. Sub-microsecond parts round up (the
    API's timestamps are whole microseconds, so a half-open window keeps its meaning).
    """
    if value is None:
        return None
    wrong = (
        f"{name} must be an instant: an ISO 8601 string ('2026-10-01' or "
        f"'2026-10-01T08:00:00+03:00'), a datetime, a date or a pandas.Timestamp; got {value!r:.60}"
    )
    if isinstance(value, str):
        if not value.strip() or value.strip().lower() in _RELATIVE_WORDS:
            raise ValueError(wrong)
    elif isinstance(value, date) and not isinstance(value, (datetime, pd.Timestamp)):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    elif not isinstance(value, (datetime, pd.Timestamp, np.datetime64)):
        raise ValueError(wrong)  # numbers are refused: seconds? nanoseconds? since when?
    try:
        if isinstance(value, datetime) and not isinstance(value, pd.Timestamp):
            aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
            return aware.astimezone(timezone.utc)
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(wrong) from error
    if pd.isna(stamp):
        raise ValueError(wrong)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if stamp.nanosecond:
        stamp = stamp.ceil("us")
    return stamp.to_pydatetime()


def one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_uuid(value: object) -> str:
    """``value`` as a canonical lower-case UUID string, else ``ValueError``.

    Exactly the 8-4-4-4-12 hex form (either case) or a :class:`uuid.UUID`: no surrounding
    whitespace, no braces, no ``urn:uuid:``, no bytes, so an id can never add anything to a URL.
    """
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise ValueError(f"not a conversation UUID: {value!r:.60}")
    return value.lower()


ALL = "all"


def conversation_ids(conversations: object) -> tuple[str, ...]:
    """Conversation ids as unique canonical UUID strings: one id, an iterable of them, or a
    pandas Series or DataFrame of them (its ``uuid`` column, e.g. from
    ``list_conversations``). ``"all"`` is for the callers that list the account first."""
    if isinstance(conversations, str) and conversations.strip().lower() == ALL:
        spelled = "" if conversations == ALL else f" (spelled {conversations!r}: write 'all')"
        raise ValueError(f"'all' (every conversation of the account) is not taken here{spelled}")
    if hasattr(conversations, "columns") and hasattr(conversations, "iloc"):  # a DataFrame
        columns = list(conversations.columns)
        column = next((c for c in ("uuid", "conversation_uuid") if c in columns), None)
        if column is None:
            raise ValueError(
                "a DataFrame of conversations needs a 'uuid' (or 'conversation_uuid') column"
            )
        conversations = conversations[column]  # type: ignore[index]
    if isinstance(conversations, (str, uuid.UUID)):
        items: list[object] = [conversations]
    elif isinstance(conversations, (bytes, bytearray)) or not isinstance(conversations, Iterable):
        raise ValueError(
            "conversations must be a conversation UUID or an iterable of them, got "
            f"{type(conversations).__name__}"
        )
    else:
        items = list(conversations)
    for item in items:
        if isinstance(item, str) and item.strip().lower() == ALL:
            raise ValueError(
                "'all' stands alone: it means every conversation of the account, and cannot be "
                "mixed with conversation UUIDs"
            )
    return tuple(dict.fromkeys(check_uuid(c) for c in items))


def wants_all(conversations: object) -> bool:
    """Whether ``conversations`` is exactly ``"all"`` (every conversation of the account)."""
    return isinstance(conversations, str) and conversations == ALL


#: The load options a listing of conversations takes (it has filters of its own).
LISTING_LOAD_OPTIONS = (
    "per_page",
    "progress",
    "on_error",
    "refresh",
    "offline",
    "max_pages",
    "deadline",
)


@dataclass(frozen=True)
class ListingFilters:
    """The filters of the account's conversations listing, sent to the server as given.

    The API takes one value per filter; a list of values is one listing per value (per
    combination, with several lists), their union de-duplicated by ``uuid``.
    """

    agent_uuid: str | Sequence[str] | None = option(
        None,
        "Only the conversations of this agent (a list: of any of them).",
        kind="str or list of str, optional",
        cli={
            "flag": "--agent",
            "action": "append",
            "metavar": "UUID",
            "help": "only this agent's conversations; repeat the flag or use commas",
        },
    )
    channel: str | Sequence[str] | None = option(
        None,
        'Only this channel (e.g. ``"whatsapp"``, ``"web"``, ``"phone"``; a list: any of them).',
        kind="str or list of str, optional",
        cli={
            "flag": "--channel",
            "action": "append",
            "help": "only this channel (whatsapp, web, phone ...); repeat the flag or use commas",
        },
    )
    status: str | Sequence[str] | None = option(
        None,
        'Only conversations with this status (e.g. ``"open"``, ``"closed"``; a list: any).',
        kind="str or list of str, optional",
        cli={
            "flag": "--status",
            "action": "append",
            "help": "only this status (open, closed ...); repeat the flag or use commas",
        },
    )
    phone: str | Sequence[str] | None = option(
        None,
        "Only the conversations of this phone number (a list: of any of them).",
        kind="str or list of str, optional",
        cli={
            "flag": "--phone",
            "action": "append",
            "help": "only this phone number's conversations; repeat the flag or use commas",
        },
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _listing_values(f.name, getattr(self, f.name)))

    def params(self) -> dict[str, str | list[str]]:
        """The filters given: one value as a string, several as a list (for records)."""
        out: dict[str, str | list[str]] = {}
        for f in fields(self):
            values = getattr(self, f.name)
            if values:
                out[f.name] = values[0] if len(values) == 1 else list(values)
        return out

    def queries(self) -> list[dict[str, str]]:
        """The query parameters of each listing to ask for: one per combination of values
        (one listing when every filter has one value or none)."""
        given = [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]
        combinations = itertools.product(*(values for _, values in given))
        return [dict(zip([name for name, _ in given], c, strict=True)) for c in combinations]

    @classmethod
    def take(cls, options: Mapping[str, Any]) -> tuple[ListingFilters, dict[str, Any]]:
        """The filters among ``options``, and the other options."""
        names = {f.name for f in fields(cls)}
        rest = {k: v for k, v in options.items() if k not in names}
        return cls(**{k: v for k, v in options.items() if k in names}), rest


def _listing_values(name: str, value: object) -> tuple[str, ...] | None:
    """A listing filter as its unique values (None: no filter), else ``ValueError``."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, uuid.UUID)) else value
    if isinstance(items, (bytes, bytearray)) or not isinstance(items, Iterable):
        raise ValueError(f"{name} must be a string or a list of strings, got {value!r}")
    values = list(items)
    if not values:
        raise ValueError(f"{name} must not be an empty list (use None for no filter)")
    for v in values:
        if name != "agent_uuid" and (not isinstance(v, str) or not v.strip() or v != v.strip()):
            raise ValueError(f"{name} must be a non-empty string (or a list of them), got {v!r}")
    if name == "agent_uuid":
        values = [check_uuid(v) for v in values]
    return tuple(dict.fromkeys(values))


#: The longest expiry (an expiry date must be a date): None is the way to say "never".
_LONGEST_EXPIRY = 1000 * 365.25 * 86400


def _seconds_value(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- signatures


def option_fields(cls: type, names: Iterable[str] | None = None) -> list[Field[Any]]:
    """The fields of ``cls`` (all, or those named, in declaration order)."""
    chosen = None if names is None else set(names)
    found = [f for f in fields(cls) if chosen is None or f.name in chosen]
    if chosen is not None and len(found) != len(chosen):
        raise AssertionError(f"unknown options {chosen - {f.name for f in found}}")
    return found


def takes(*groups: tuple[type, Iterable[str] | None]) -> Callable[[F], F]:
    """Give a ``**options`` function the signature and docstring entries of its options.

    ``groups`` are ``(dataclass, names or None for all)``. The function's docstring marks
    where the entries go with a line holding only ``<options>``.
    """
    chosen = [f for cls, names in groups for f in option_fields(cls, names)]

    def decorate(func: F) -> F:
        if func.__doc__ and "<options>" in func.__doc__:
            func.__doc__ = func.__doc__.replace("<options>", _render(chosen, func.__doc__))
        if isinstance(func, type):  # a class: its __init__ carries the signature
            return func
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        extra = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default if f.default is not MISSING else inspect.Parameter.empty,
                annotation=f.type,
            )
            for f in chosen
            if f.name not in {p.name for p in own}
        ]
        func.__signature__ = signature.replace(parameters=[*own, *extra])  # type: ignore[attr-defined]
        func.__options__ = tuple(f.name for f in chosen)  # type: ignore[attr-defined]
        return func

    return decorate


def _render(chosen: Sequence[Field[Any]], doc: str) -> str:
    line = next(line for line in doc.splitlines() if line.strip() == "<options>")
    indent = line[: len(line) - len(line.lstrip())]
    out: list[str] = []
    for f in chosen:
        out.append(f"{f.name} : {f.metadata['kind']}")
        out.extend(
            textwrap.wrap(f.metadata["doc"], 92, initial_indent="    ", subsequent_indent="    ")
        )
    return f"\n{indent}".join(out)


def split_options(options: Mapping[str, Any], *groups: type) -> list[dict[str, Any]]:
    """Split keyword options among dataclasses; an unknown name is a ``TypeError``."""
    names = [{f.name for f in fields(cls)} for cls in groups]
    known = set().union(*names)
    unknown = set(options) - known
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}; known options: {', '.join(sorted(known))}"
        )
    return [{k: v for k, v in options.items() if k in group} for group in names]


#: The frame libraries a load or a read can return.
TO_VALUES = ("pandas", "polars")


@dataclass(frozen=True)
class OutputOptions:
    """What kind of frame a load or a read returns (``load_sessions``, ``MihuClient.sessions``,
    ``list_conversations``, ``read_snapshots``)."""

    to: str = option(
        "pandas",
        '``"pandas"``: a pandas DataFrame. ``"polars"``: a Polars DataFrame with the same '
        'columns and types (durations ``Duration("us")``, UTC datetimes, ``List(String)``), '
        'built from the Arrow table without pandas; needs ``pip install "mihu_frames[polars]"``.',
        kind='{"pandas", "polars"}, default "pandas"',
    )

    def __post_init__(self) -> None:
        one_of("to", self.to, TO_VALUES)
