"""What a request is for (:class:`Where`) and what a successful one returns (:class:`Reply`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Where:
    """What a request is for, so that every error can say which conversation and page failed."""

    conversation: str | None = None
    page: int | None = None

    def describe(self) -> str:
        """``"conversation X, page N"``, as much of it as is known, for log lines."""
        parts = []
        if self.conversation:
            parts.append(f"conversation {self.conversation}")
        if self.page is not None:
            parts.append(f"page {self.page}")
        return ", ".join(parts) or "the request"


@dataclass(frozen=True)
class Reply:
    """A whole response with status 200: its body (decoded) and what is known of it."""

    url: str
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    retries: int
    #: When the server produced it: its ``Date`` header (the clock of the sessions' timestamps).
    served_at: datetime
