"""The API's address: which base URLs are accepted, and where plain ``http`` may carry a token.

Plain ``http`` is refused while a token is set unless the host is a loopback address (a local
stand-in server); :mod:`~mihu_frames.transport.connections` never sends loopback requests
through a proxy.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit


def resolve_base_url(base_url: str | None, subdomain: str | None) -> str:
    """Base URL from the arguments or ``MIHU_BASE_URL`` / ``MIHU_SUBDOMAIN``.

    A trailing ``/api/v1`` (as in the API's documentation examples) is accepted and dropped.

    Examples
    --------
    >>> resolve_base_url(None, "Acme")
    'https://acme.mihu.ai'
    """
    if base_url and subdomain:
        raise ValueError("pass base_url or subdomain, not both")
    if not base_url and not subdomain:
        base_url = os.environ.get("MIHU_BASE_URL") or None
        subdomain = os.environ.get("MIHU_SUBDOMAIN") or None
    if subdomain:
        if not isinstance(subdomain, str) or not re.fullmatch(
            r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", subdomain
        ):
            raise ValueError(f"not a valid subdomain: {subdomain!r}")
        return f"https://{subdomain.lower()}.mihu.ai"
    if not base_url:
        raise ValueError(
            "no API address: pass base_url= or subdomain=, or set MIHU_BASE_URL or MIHU_SUBDOMAIN"
        )
    if not isinstance(base_url, str):
        raise ValueError(f"base_url must be a string, got {type(base_url).__name__}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    # Scheme and host in lower case (as requests spells them), so one server has one spelling.
    path = parts.path.rstrip("/")
    if path.lower().endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return f"{parts.scheme}://{parts.netloc.lower()}{path}"


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_plain_http(base_url: str, has_token: bool) -> None:
    """Raise ``ValueError`` if a token would go over plain ``http`` to a host not on loopback."""
    parts = urlsplit(base_url)
    if has_token and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise ValueError(
            f"refusing to send the API token over plain http to {parts.hostname}; use https"
        )
