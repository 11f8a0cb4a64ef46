"""The exception tree of mihu_frames, documented in one place.

::

    MihuError                      every failure the API or its responses cause
    ├── ConnectionError            no answer from the address (names the URL tried)
    ├── AuthenticationError        401 / 403, or no token at all: token missing, wrong or refused
    ├── NotFoundError              404: the conversation does not exist (or is not yours), or
    │                              the address is wrong (names the URL tried)
    ├── ValidationError            422: the server rejected the query (field errors in ``.errors``)
    ├── RateLimitError             429 still returned after every retry
    ├── ServerError                5xx or a dropped connection after every retry
    │   └── ResponseTimeoutError   a response not in whole within ``timeout``, after every retry
    ├── DeadlineExceededError      the load's ``deadline`` passed before its last page
    ├── ResponseFormatError        a body that is not the documented envelope or session shape
    ├── CacheMissError             ``offline=True`` and a page is not in the cache
    └── CacheLockedError           another process holds the cache file's write lock

Bad arguments raise the built-in ``ValueError`` before any request is sent.

Every error says which request failed (conversation, page) and carries the server's message.
None of them ever holds the token: messages are built from the URL path and the server's text,
and the server's text is scrubbed of the token in case a backend echoes it.
"""

from __future__ import annotations

from typing import Any


class MihuError(Exception):
    """Base class of every error raised for an API call or response.

    Attributes
    ----------
    message : str
        The server's message, or ours when the server gave none.
    conversation : str or None
        The conversation UUID the failing request was for.
    page : int or None
        The page number of the failing request.
    status_code : int or None
        The HTTP status, when a response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        conversation: str | None = None,
        page: int | None = None,
        status_code: int | None = None,
    ) -> None:
        self.message = message
        self.conversation = conversation
        self.page = page
        self.status_code = status_code
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = []
        if self.conversation is not None:
            where.append(f"conversation {self.conversation}")
        if self.page is not None:
            where.append(f"page {self.page}")
        status = f"HTTP {self.status_code}: " if self.status_code is not None else ""
        prefix = f"{', '.join(where)}: " if where else ""
        return f"{prefix}{status}{self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[MihuError], message: str, state: dict[str, Any]) -> MihuError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    Exception.__init__(error, error._describe())
    return error


class AuthenticationError(MihuError):
    """The API refused the token (HTTP 401 or 403)."""


class NotFoundError(MihuError):
    """HTTP 404: the conversation does not exist or is not visible to this token, or the
    address is wrong (the message says which it looks like).

    Attributes
    ----------
    url : str or None
        The address that answered 404, without its query (never with the token: it travels
        in a header).
    """

    def __init__(self, message: str, *, url: str | None = None, **kw: Any) -> None:
        self.url = url
        super().__init__(message, **kw)


class ValidationError(MihuError):
    """The API rejected the query (HTTP 422).

    Attributes
    ----------
    errors : dict[str, list[str]]
        The server's field errors, e.g. ``{"per_page": ["The per page field must not be ..."]}``.
    """

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None, **kw: Any):
        self.errors = errors or {}
        super().__init__(message, **kw)

    def _describe(self) -> str:
        text = super()._describe()
        if self.errors:
            fields = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in self.errors.items())
            text = f"{text} ({fields})"
        return text


class ConnectionError(MihuError):
    """No answer from the address: a refused connection, an unknown host, a TLS or proxy failure.

    Attributes
    ----------
    url : str or None
        The URL that was tried (never with the token: it travels in a header).
    """

    def __init__(self, message: str, *, url: str | None = None, **kw: Any) -> None:
        self.url = url
        super().__init__(message, **kw)


class RateLimitError(MihuError):
    """The API kept answering 429 Too Many Requests after every retry."""


class ServerError(MihuError):
    """The API failed (5xx), dropped the connection or timed out after every retry."""


class ResponseTimeoutError(ServerError):
    """A response did not arrive in whole within the client's ``timeout``, after every retry.

    ``timeout`` bounds each whole response (connecting and every read together), so a server
    that sends a byte a second cannot hold a load forever.
    """


class DeadlineExceededError(MihuError):
    """The load's ``deadline`` passed before its last page arrived."""


class ResponseFormatError(MihuError):
    """A response body is not the documented envelope, or a session has an impossible field.

    Attributes
    ----------
    field : str or None
        The offending field (``"data.last_page"``, ``"task_uuids"``, ...), when known.
    """

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        self.field = field
        super().__init__(message, **kw)


class CacheMissError(MihuError):
    """``offline=True`` was asked for and a page is not in the cache."""


class CacheLockedError(MihuError):
    """Another process holds the cache file's write lock for longer than the client's timeout."""


class NotASnapshotRootError(ValueError, FileNotFoundError):
    """A folder given as a snapshot root is not one (not a :class:`MihuError`: no request).

    Raised by ``read_snapshots`` and ``compact_snapshots`` for a missing, empty or unrelated
    folder, a file, or a root's ``sessions/`` folder passed by mistake; by ``write_snapshot``
    and ``sync_snapshots`` for a file or a non-empty folder that is not a root (they create a
    root in a missing or empty folder). It is both a ``ValueError`` (a bad argument) and a
    ``FileNotFoundError`` (no root there), so callers catching either keep working.

    Attributes
    ----------
    root : str
        The folder given.
    reason : str
        Why it is not a root; the message adds what a root looks like.
    """

    #: What a root looks like (the layout itself is documented in ``mihu_frames.store``).
    LOOKS_LIKE = (
        "A snapshot root is a folder or URI holding two Delta Lake tables, latest/ (the latest "
        "state) and versions/ (every version), as write_snapshot and sync_snapshots create it "
        "in a missing or empty folder; roots of earlier releases hold mihu_frames_root.json "
        "or sessions/fetched_date=YYYY-MM-DD/ folders."
    )

    def __init__(self, root: Any, reason: str) -> None:
        self.root = str(root)
        self.reason = reason
        super().__init__(f"{self.root} is not a snapshot root: {reason}. {self.LOOKS_LIKE}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.root, self.reason))


class SnapshotStoreError(OSError):
    """A snapshot root's storage failed: unreachable, refused (credentials, a missing bucket),
    full, or a commit still in conflict after its bounded retries. Names the root, never a
    credential; nothing was committed by the failing step (the root is as before it)."""
