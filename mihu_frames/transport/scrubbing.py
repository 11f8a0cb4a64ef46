"""The token kept out of everything a server sends back: messages, bodies, stored headers.

A :class:`Scrubber` is the only holder of the token besides the transport's one header dict.
Its repr says whether a token is set, never the token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mihu_frames import _spelling as spelling

#: Tokens this long or longer are scrubbed from everything a server sends.
MIN_SECRET = 8
#: Response headers never stored with a page: the body is stored decoded.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class Scrubber:
    """Replaces the token by ``***`` in server text, however the server spelled it.

    Parameters
    ----------
    token : str or None
        The bearer token. One shorter than :data:`MIN_SECRET` is no real API token (Mihu's are
        dozens of characters) and is not looked for: scrubbing ``"t"`` would garble every body.

    Examples
    --------
    >>> Scrubber("s3cret-token").scrub("bad token Bearer s3cret-token")
    'bad token ***'
    """

    def __init__(self, token: str | None) -> None:
        secret = token if token and len(token) >= MIN_SECRET else None
        self._secrets = (f"Bearer {secret}", secret) if secret else ()
        # A body spells it in JSON: as is, or with some characters as escapes. Either its bytes
        # or an escape of one of its characters is then in the body (a cheap first test);
        # only then is every spelling, after ``Bearer`` or bare, replaced.
        self._literal = secret.encode() if secret else b""
        self._escaped = re.compile(spelling.escapes(secret).encode()) if secret else None
        self._any_spelling = (
            re.compile(f"(?:{spelling.spelled('Bearer ')})?{spelling.spelled(secret)}".encode())
            if secret
            else None
        )

    def __repr__(self) -> str:
        return f"Scrubber(token={'set' if self._secrets else 'none'})"

    def scrub(self, text: str) -> str:
        """``text`` with the token (bare, or after ``Bearer``) replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def scrub_body(self, body: bytes) -> bytes:
        """``body`` with the token replaced by ``***`` wherever the server echoed it: bare,
        after ``Bearer``, and in any JSON spelling (Laravel escapes ``/`` as ``\\/``; a
        server may write any character as a ``\\u`` escape)."""
        if self._escaped is None or self._any_spelling is None:
            return body
        if self._literal in body or self._escaped.search(body):
            body = self._any_spelling.sub(b"***", body)
        return body

    def holds_secret(self, value: str | bytes) -> bool:
        """Whether ``value`` contains the token."""
        if not self._secrets:
            return False
        token = self._secrets[1]
        return token in value if isinstance(value, str) else token.encode() in value

    def storable_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The response headers worth storing with a decoded body: none that repeats the token,
        none about the transfer encoding."""
        return {
            name: value
            for name, value in headers.items()
            if name.lower() not in _TRANSFER_HEADERS and not self.holds_secret(value)
        }
