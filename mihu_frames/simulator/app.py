"""``Simulator``: the options, the data, the clock, the pipeline and the server put together.

The ``Simulator`` is the public face: it holds the options (the knobs are its attributes, read at
each request), starts and stops the server thread, and hands each request to its ``Pipeline``
(``pipeline.py``: latency, faults, rate limits, then the ``Endpoints`` of ``endpoints.py``). Its
data methods (``ground_truth``, ``add_sessions`` ...) are the ``Dataset``'s (``data.py``); its
``now()`` is the ``DataClock``'s (``clock.py``), which continues the data past ``DATA_END``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from datetime import datetime
from typing import Any

from mihu_frames.simulator import listing
from mihu_frames.simulator import options as _options
from mihu_frames.simulator.clock import DataClock
from mihu_frames.simulator.data import Dataset
from mihu_frames.simulator.endpoints import Endpoints
from mihu_frames.simulator.options import SimulatorOptions
from mihu_frames.simulator.pipeline import Pipeline
from mihu_frames.simulator.server import RequestRecord, Serving

logger = logging.getLogger(__name__)


class Simulator:
    """An HTTP server on 127.0.0.1 serving the Mihu API from synthetic data.

    Endpoints: ``GET /api/v1/conversations/{uuid}/sessions`` (documented), the account's
    conversations ``GET /api/v1/conversations`` and ``GET /api/v1/conversations/{uuid}`` (see
    ``listing.py``), all behind the same auth, latency, faults and rate limits.

    The constructor fixes the conversation UUIDs; each conversation's sessions are generated on
    first use (a request, ``ground_truth``, ``tags`` or a mutation), always the same way, so
    construction is instant even for large ``sizes``. ``start`` serves the data in a daemon
    thread. The knobs (latency, faults, drift) are plain attributes that may be changed while it
    runs, one by one or validated together with ``configure``.

    Parameters
    ----------
    **options
        The fields of ``SimulatorOptions`` (see its documentation and ``inspect.signature``):
        ``seed``, ``sizes``, ``token``, ``latency``, ``rate_limit``, ``retry_after``,
        ``rate_limit_max``, ``rate_window``, ``bucket_rate``, ``bucket_burst``, ``server_error``,
        ``drop``, ``stall``, ``stall_seconds``, ``drift``, ``host``, ``port``, ``clock``.

    Examples
    --------
    >>> with Simulator(seed=1, sizes=[120]) as sim:  # doctest: +SKIP
    ...     url = f"{sim.base_url}/api/v1/conversations/{sim.conversation_uuids[0]}/sessions"
    ...     reply = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"})
    ...     reply.json()["data"]["total"]
    120
    """

    seed: int
    sizes: tuple[int, ...]
    token: str
    latency: float
    rate_limit: float
    retry_after: int
    rate_limit_max: int
    rate_window: float
    bucket_rate: float
    bucket_burst: int
    server_error: float
    drop: float
    stall: float
    stall_seconds: float
    drift: int
    host: str
    port: int
    clock: str

    def __init__(self, **options: Any) -> None:
        chosen = SimulatorOptions(**options)
        for f in fields(chosen):
            setattr(self, f.name, getattr(chosen, f.name))
        self._serving: Serving | None = None
        self._clock = DataClock(self.clock)
        self._data = Dataset(self.seed, self.sizes, self._clock.now_us)
        self._pipeline = Pipeline(self, Endpoints(self._data, self.token), self.seed)
        self.requests: list[RequestRecord] = self._pipeline.log.records
        self.conversation_uuids: list[str] = self._data.uuids

    # --- options ----------------------------------------------------------------------------
    @property
    def options(self) -> SimulatorOptions:
        """The current options, knobs as they are now."""
        return SimulatorOptions(**{f.name: getattr(self, f.name) for f in _options.option_fields()})

    def configure(self, **knobs: Any) -> SimulatorOptions:
        """Change knobs together, validated first; return the options now in force.

        Parameters
        ----------
        **knobs
            Options that may change while running (``latency``, ``rate_limit``, ``server_error``
            ...). ``seed``, ``sizes``, ``token``, ``host``, ``port`` and ``clock`` are fixed.

        Examples
        --------
        >>> sim.configure(latency=0.01, server_error=0.05)  # doctest: +SKIP
        """
        new = _options.reconfigured(self.options, knobs)
        for name in knobs:
            setattr(self, name, getattr(new, name))
        return new

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Simulator:
        """Start serving in a daemon thread and return ``self``.

        Returns
        -------
        Simulator
            ``self``, so ``sim = Simulator(...).start()`` works.
        """
        if self._serving is not None:
            raise RuntimeError("the simulator is already running")
        self._pipeline.stopping.clear()
        self._clock.start()
        self._serving = Serving((self.host, self.port), self._pipeline.handle, self._http_date)
        logger.info("simulator serving %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake sleeping handlers. Idempotent."""
        serving, self._serving = self._serving, None
        if serving is None:
            return
        self._pipeline.stopping.set()
        serving.stop()
        logger.info("simulator stopped")

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._serving is not None else "stopped"
        return f"Simulator(seed={self.seed}, sizes={list(self.sizes)}, {where})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the running server.

        Raises
        ------
        RuntimeError
            If the simulator has not been started.
        """
        if self._serving is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._serving.base_url

    def now(self) -> datetime:
        """The simulator's current time (UTC): what the ``Date`` header and mutations use.

        With ``clock="simulated"`` it is ``DATA_END`` plus the time elapsed since the first
        ``start`` (``DATA_END`` before that), measured with ``time.monotonic``; with
        ``clock="wall"`` it is the real time.

        Returns
        -------
        datetime
            A timezone-aware UTC datetime with microsecond resolution.

        Examples
        --------
        >>> from mihu_frames.simulator import DATA_END
        >>> Simulator(sizes=[1]).now() == DATA_END
        True
        """
        return self._clock.now()

    # --- requests log and deterministic faults ----------------------------------------------
    @property
    def request_count(self) -> int:
        """Number of requests received since the start or the last ``reset_requests``."""
        return len(self.requests)

    def reset_requests(self) -> None:
        """Forget the recorded requests (the list is cleared in place)."""
        self._pipeline.log.clear()

    def fail_next(
        self, kind: str, n: int = 1, *, conversation: str | None = None, page: int | None = None
    ) -> None:
        """Make the next ``n`` matching requests fail with ``kind``.

        Parameters
        ----------
        kind : str
            ``"429"``, ``"500"``, ``"502"``, ``"503"``, ``"401"``; ``"drop"`` (close without a
            response); ``"stall"`` (answer after ``stall_seconds``); ``"invalid_json"`` (200 with a
            truncated JSON body); ``"bad_envelope"`` (200 JSON that is not the envelope);
            ``"html200"`` (200 ``text/html`` maintenance page).
        n : int
            How many requests fail.
        conversation, page : optional
            Only requests for this conversation (its sessions, or itself) and/or this page (of the
            sessions or of the conversations listing; page 1 when not given) match.

        Examples
        --------
        >>> sim.fail_next("503", 2, page=3)  # doctest: +SKIP
        """
        self._pipeline.faults.queue(kind, n, conversation, page)

    def reset_rate_limits(self) -> None:
        """Forget what the rate limiters counted: every window closed, every bucket full."""
        self._pipeline.reset_rate_limits()

    # --- data access ------------------------------------------------------------------------
    def ground_truth(
        self,
        conversation: str | None = None,
        *,
        status: str | None = None,
        type: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return the sessions exactly as currently served, in ``created_at`` ascending order.

        Parameters
        ----------
        conversation : str, optional
            One conversation UUID; None means every conversation.
        status, type : str, optional
            Keep only sessions with this internal status / type (as the API filters do).

        Returns
        -------
        list of dict
            ``json.loads`` of each session's served bytes, undocumented fields included.

        Examples
        --------
        >>> Simulator(seed=1, sizes=[3]).ground_truth()[0]["uuid"]  # doctest: +SKIP
        '...'
        """
        return self._data.ground_truth(conversation, status, type)

    def conversations_truth(
        self,
        *,
        phone: str | None = None,
        agent_uuid: str | None = None,
        channel: str | None = None,
        status: str | None = None,
        sort_by: str = "created_at",
        sort_dir: str = "desc",
    ) -> list[dict[str, Any]]:
        """Return the account's conversations exactly as ``GET /api/v1/conversations`` lists them.

        Parameters
        ----------
        phone, agent_uuid, channel, status : str, optional
            The listing's filters, applied as the server applies them (``phone`` by its digits).
        sort_by : {"created_at", "updated_at"}
            The listing's order; the default (``created_at`` descending) is the listing's default.
        sort_dir : {"desc", "asc"}

        Returns
        -------
        list of dict
            ``json.loads`` of each conversation object, every page's in order.

        Examples
        --------
        >>> [c["sessions_count"] for c in Simulator(sizes=[2, 0]).conversations_truth()]
        [0, 2]
        """
        listing.check_filters(channel=channel, status=status, sort_by=sort_by, sort_dir=sort_dir)
        records = listing.listing(
            self._data,
            phone=phone,
            agent_uuid=agent_uuid,
            channel=channel,
            status=status,
            sort_by=sort_by,
            desc=sort_dir == "desc",
        )
        return [json.loads(r.body) for r in records]

    def tags(self) -> dict[str, tuple[str, str]]:
        """Return ``{session uuid: (status, type)}`` for every session (not in the served JSON)."""
        return self._data.tags()

    def generate_all(self) -> None:
        """Generate every conversation now rather than on first use (before timing a client)."""
        self._data.generate_all()

    # --- mutations --------------------------------------------------------------------------
    def add_conversation(self, size: int) -> str:
        """Generate a new conversation with ``size`` sessions and return its UUID.

        The content depends only on (seed, position, size), like the initial conversations.
        """
        return self._data.add_conversation(size)

    def add_sessions(self, conversation: str, n: int) -> list[str]:
        """Add ``n`` new open sessions created, started and updated now (strictly increasing).

        "Now" is ``now()``, pushed forward by a microsecond where needed so that every new
        timestamp is later than all timestamps before it.

        Returns
        -------
        list of str
            The new session UUIDs, oldest first.
        """
        return self._data.add_sessions(conversation, n)

    def touch_sessions(self, conversation: str, n: int) -> list[str]:
        """Record new activity on ``n`` existing sessions; return their UUIDs.

        Open sessions are chosen first: they get ``last_activity_at = updated_at = now`` and one in
        four ends now (status ``completed``, ``ended_at`` set). When fewer than ``n`` are open,
        closed sessions are touched too, but only their ``updated_at`` moves, so that
        ``last_activity_at <= ended_at`` keeps holding.
        """
        return self._data.touch_sessions(conversation, n)

    def delete_sessions(self, conversation: str, n: int) -> list[str]:
        """Delete ``n`` randomly chosen sessions (all if fewer) and return their UUIDs."""
        return self._data.delete_sessions(conversation, n)

    def share_session(self, session: str, conversation: str) -> None:
        """Serve an existing session under ``conversation`` too, as a backend that moved or
        merged conversations might: one session uuid listed by two conversations.

        The copy has the same fields, except ``conversation_uuid`` (the conversation it is now
        served under); from then on the two copies change independently (``touch_sessions``,
        ``delete_sessions`` of either conversation), as two rows of a real backend would.

        Raises
        ------
        KeyError
            If no conversation has the session, or ``conversation`` is unknown.
        ValueError
            If ``conversation`` already serves the session.
        """
        self._data.share_session(session, conversation)

    def upper_case_ids(self, conversation: str) -> None:
        """Serve ``conversation_uuid`` upper-case in the conversation's sessions (those it has
        now; sessions added later are served lower-case), as a backend or an import might: the
        same id in another spelling. Paths and the listing keep the lower-case id.
        """
        self._data.upper_case_ids(conversation)

    def set_timestamp(self, session: str, name: str, text: str) -> None:
        """Serve timestamp ``name`` of one session as ``text`` verbatim, as a misbehaving backend
        would (``"9999-12-31T23:00:00-12:00"``, ``"0001-01-01T00:00:00Z"``): the instant the
        generator never produces. Orderings (``sort_by``) follow the instant.

        Raises
        ------
        KeyError
            If no conversation has the session.
        """
        self._data.set_timestamp(session, name, text)

    def _http_date(self) -> str:
        """The ``Date`` header: the clock's now, never before an instant the data handed out."""
        return self._clock.http_date(self._data.latest_us)


Simulator.__signature__ = _options.signature()  # type: ignore[attr-defined]
