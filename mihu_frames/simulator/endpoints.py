"""The application behind the gateway: auth, then the three endpoints' answers from the data.

``Endpoints.answer`` is step 6 of the pipeline (``pipeline.py``): a request that reached the
application gets ``401 Unauthenticated.`` without the right bearer token, else its endpoint's
answer: a conversation's sessions page, a page of the account's conversations or one
conversation (404 for an unknown conversation, 422 for a bad filter, as Laravel answers).
"""

from __future__ import annotations

import hmac

from mihu_frames.simulator import listing
from mihu_frames.simulator.data import CHANNELS, SORT_KEYS, STATUSES, TYPES, Dataset
from mihu_frames.simulator.server import (
    UUID_RE,
    Handler,
    Response,
    Route,
    error,
    item,
    paginated,
    parse_int,
    validate,
    validation_error,
)

_SESSION_CHOICES = (
    ("status", "status", STATUSES),
    ("type", "type", TYPES),
    ("sort_by", "sort by", SORT_KEYS),
    ("sort_dir", "sort dir", ("asc", "desc")),
)
_LISTING_CHOICES = (
    ("sort_by", "sort by", listing.LISTING_SORT_KEYS),
    ("sort_dir", "sort dir", ("asc", "desc")),
    ("channel", "channel", CHANNELS),
    ("status", "status", listing.CONVERSATION_STATUSES),
)
_LISTING_UUIDS = (("agent_uuid", "agent uuid"),)


class Endpoints:
    """The API's endpoints over one dataset, behind one bearer token.

    Parameters
    ----------
    data : Dataset
        What is served.
    token : str
        The bearer token every request must present.
    """

    def __init__(self, data: Dataset, token: str) -> None:
        self.data = data
        self.token = token

    def answer(
        self, handler: Handler, matched: Route, params: dict[str, str], *, drift: int = 0
    ) -> Response:
        """The application's answer to a routed request.

        Parameters
        ----------
        handler : Handler
            The request (its ``Authorization`` and ``Host`` headers are read).
        matched : Route
            The endpoint its path asks for.
        params : dict of str to str
            Its query parameters.
        drift : int
            Sessions the data gains or changes while this sessions page is served (the knob).

        Returns
        -------
        Response
            401, 404, 422 or the endpoint's success envelope.
        """
        if not self.authenticated(handler):
            return error(401, "Unauthenticated.")
        if matched.endpoint == "sessions":
            return self._sessions(handler, matched, params, drift)
        if matched.endpoint == "conversations":
            return self._listing(handler, params)
        return self._one_conversation(matched)

    def authenticated(self, handler: Handler) -> bool:
        """Whether ``handler``'s request presents ``Bearer <token>`` (compared in constant time)."""
        scheme, _, given = handler.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8"), self.token.encode("utf-8")
        )

    def _sessions(
        self, handler: Handler, matched: Route, params: dict[str, str], drift: int
    ) -> Response:
        conversation = matched.conversation or ""
        if not UUID_RE.fullmatch(conversation) or conversation not in self.data.conversations:
            return error(404, "Conversation not found.")
        errors = validate(params, _SESSION_CHOICES)
        if errors:
            return validation_error(errors)
        page = parse_int(params.get("page") or "1") or 1
        per_page = parse_int(params.get("per_page") or "15") or 15
        found = self.data.sessions_page(
            conversation,
            status=params.get("status") or None,
            type_=params.get("type") or None,
            sort_by=params.get("sort_by") or "started_at",
            desc=(params.get("sort_dir") or "desc") == "desc",
            page=page,
            per_page=per_page,
            drift=drift,
        )
        if found is None:  # deleted meanwhile
            return error(404, "Conversation not found.")
        total, items = found
        path = f"{_origin(handler)}/api/v1/conversations/{conversation}/sessions"
        return paginated("Sessions retrieved successfully", path, page, per_page, total, items)

    def _listing(self, handler: Handler, params: dict[str, str]) -> Response:
        errors = validate(params, _LISTING_CHOICES, _LISTING_UUIDS)
        if errors:
            return validation_error(errors)
        page = parse_int(params.get("page") or "1") or 1
        per_page = parse_int(params.get("per_page") or "15") or 15
        records = listing.listing(
            self.data,
            phone=params.get("phone") or None,
            agent_uuid=params.get("agent_uuid") or None,
            channel=params.get("channel") or None,
            status=params.get("status") or None,
            sort_by=params.get("sort_by") or "created_at",
            desc=(params.get("sort_dir") or "desc") == "desc",
        )
        start = (page - 1) * per_page
        items = [r.body for r in records[start : start + per_page]]
        path = f"{_origin(handler)}/api/v1/conversations"
        message = "Conversations retrieved successfully"
        return paginated(message, path, page, per_page, len(records), items)

    def _one_conversation(self, matched: Route) -> Response:
        found = listing.one(self.data, matched.conversation or "")
        if found is None:
            return error(404, "Conversation not found.")
        return item("Conversation retrieved successfully", found.body)


def _origin(handler: Handler) -> str:
    """``http://`` and the ``Host`` the request named, else the address it reached."""
    host = handler.headers.get("Host")
    if not host:
        address, port = handler.server.server_address[:2]
        host = f"{address!s}:{port}"
    return f"http://{host}"
