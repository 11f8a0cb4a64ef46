"""A model of the whole library, driven at random against the simulator (issue 18).

A Hypothesis ``RuleBasedStateMachine`` interleaves what users do on one account: loads with
random options (two clients on one cache file, one of them with a short ``expire_after``, and
loads without a cache; ``status``/``type`` as one value, a list or ``"all"``; ``refresh``,
``offline``; subsets of conversations or ``"all"``; ids lower-case, upper-case or
``uuid.UUID``), conversation listings with random filters, ``write_snapshot``,
``sync_snapshots`` (named, ``"all"``, ``full=True``), ``read_snapshots`` with filters and
``compact_snapshots``, while the server moves on (new sessions, edits, deletions, new
conversations, one session served under two conversations) and the cache ages (pages of the
short-lived client expire), loses a page row, or is opened by a new client.

After every step the result is checked against the simulator's ground truth, as the model
remembers it: every state the server went through is kept (``Snapshot``), and every query that
reached the server is recorded with the state it saw (the simulator's request log says which
did). The staleness the README allows is modelled, not tolerated: a query answered without a
request must return exactly the state of the *latest* fetch of that query (its listing is what
the cache holds; a stored load is dropped when any of its conversations is fetched anew), and
only while that fetch has not expired; ``offline=True`` returns the latest fetch, expired too,
or raises ``CacheMissError``; a query that reached the server returns the server's state now.

Budget: ``make test`` runs ``MIHU_MODEL_EXAMPLES`` (default 8) examples of up to
``MIHU_MODEL_STEPS`` (default 25) steps, about a minute on one core. A longer run::

    MIHU_MODEL_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_model.py -q -p no:cacheprovider

Not derandomized: each run explores new sequences (that is the point of a safety net), and a
failure prints its shrunk sequence of steps and the ``@reproduce_failure`` line that replays it.
``database=None``: nothing is written to the work tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests_cache
from conftest import actual_rows, expected_rows
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

import mihu_frames as mf
from mihu_frames.simulator import Simulator

EXAMPLES = int(os.environ.get("MIHU_MODEL_EXAMPLES", "8"))
STEPS = int(os.environ.get("MIHU_MODEL_STEPS", "25"))
MODEL_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)

STATUSES = ("active", "completed", "timed_out")
TYPES = ("text", "voice")
PER_PAGE = 20  # conversations of 45 and 70 sessions take 3 and 4 pages
LIST_PER_PAGE = 1  # a listing of 4 to 8 conversations, filtered or not, takes several pages
SHORT = 0.2  # the short-lived client's expire_after, seconds
LONG = 3600.0

Key = tuple[str, str, tuple[tuple[str, str], ...]]


def key_of(endpoint: str, conversation: str, params: dict[str, Any]) -> Key:
    """What identifies a cached listing: endpoint, conversation and every parameter but page."""
    return (
        endpoint,
        conversation,
        tuple(
            sorted(
                # the server matches an agent case-insensitively: one listing, either spelling
                (k, str(v).lower() if k == "agent_uuid" else str(v))
                for k, v in params.items()
                if k != "page"
            )
        ),
    )


def session_key(conversation: str, status: str | None, type_: str | None) -> Key:
    params: dict[str, Any] = {"per_page": PER_PAGE, "sort_by": "created_at", "sort_dir": "asc"}
    if status is not None:
        params["status"] = status
    if type_ is not None:
        params["type"] = type_
    return key_of("sessions", conversation, params)


def listing_key(filters: dict[str, str], per_page: int) -> Key:
    params = {"per_page": per_page, "sort_by": "created_at", "sort_dir": "asc", **filters}
    return key_of("conversations", "", params)


@dataclass(frozen=True)
class Snapshot:
    """One state of the server: each conversation's sessions as served, their tags, the listing."""

    sessions: dict[str, list[dict[str, Any]]]
    status: dict[str, dict[str, str]]  # conversation -> uuid -> status
    type: dict[str, dict[str, str]]  # conversation -> uuid -> type
    listing: list[dict[str, Any]]  # the conversations, created_at ascending

    def rows(self, conversation: str, status: str | None, type_: str | None) -> list[dict]:
        tags_s, tags_t = self.status[conversation], self.type[conversation]
        return [
            s
            for s in self.sessions[conversation]
            if (status is None or tags_s[s["uuid"]] == status)
            and (type_ is None or tags_t[s["uuid"]] == type_)
        ]

    def listed(self, filters: dict[str, str]) -> list[str]:
        """The listing under ``filters``, as the API documents them (an independent filter)."""
        out = []
        for c in self.listing:
            if "channel" in filters and c["channel"] != filters["channel"]:
                continue
            if "status" in filters and c["status"] != filters["status"]:
                continue
            if (
                "agent_uuid" in filters
                and (c["agent_uuid"] or "").lower() != filters["agent_uuid"].lower()
            ):
                continue
            out.append(c["uuid"])
        return out


@dataclass(frozen=True)
class Fetch:
    """The latest fetch of one query: the server state it saw, and how long its pages live."""

    version: int
    short: bool
    epoch: int  # the aging epoch it was saved in


@dataclass
class Client:
    name: str
    client: mf.MihuClient
    short: bool


def frame_rows(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The frame's rows by uuid, in the plain form of conftest's ``actual_rows``."""
    return {r["uuid"]: r for r in actual_rows(df)}


def check_frame(df: pd.DataFrame) -> None:
    """What every sessions frame keeps: columns and dtypes, one row per uuid, ids lower-case."""
    schema = mf.empty_frame()
    assert list(df.columns) == list(schema.columns)
    assert df.dtypes.to_dict() == schema.dtypes.to_dict()
    assert df["uuid"].is_unique, df["uuid"][df["uuid"].duplicated()].tolist()
    for column in ("uuid", "conversation_uuid"):
        values = df[column].dropna().astype(str)
        upper = values[values != values.str.lower()]
        assert upper.empty, f"{column} not lower-case: {upper.tolist()[:3]}"


class LibraryModel(RuleBasedStateMachine):
    """The library against the simulator, with the server states as the oracle."""

    #: Where each run's folder is made (the test's ``tmp_path``).
    folder: Path = Path(tempfile.gettempdir())

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="model-", dir=self.folder))
        self.sim = Simulator(seed=23, sizes=(0, 3, 45, 70), retry_after=0).start()
        self.cache_path = self.base / "cache" / "http_cache.sqlite"
        self.clients: dict[str, Client] = {}
        self.snapshots: list[Snapshot] = []
        self.cversion: dict[str, int] = {}  # conversation -> changes made to it
        self.fetched: dict[Key, Fetch] = {}
        self.maybe_missing: set[Key] = set()  # a page row removed since its latest fetch
        self.all_missing = False
        self.epoch = 0
        self.shared: dict[str, set[str]] = {}  # session uuid -> conversations serving it
        # root S: sync_snapshots only
        self.sync_root = self.base / "synced"
        self.synced: dict[str, dict[str, Any] | None] = {}  # uuid -> row held (None: shared)
        self.sync_marks: dict[str, dict[str, int]] = {}  # conversation -> versions at its sync
        self.sync_all = False
        # root W: write_snapshot only
        self.write_root = self.base / "written"
        self.written: dict[str, tuple[dict[str, Any], pd.Timestamp]] = {}
        self.last_frame: pd.DataFrame | None = None
        self.last_listing: tuple[str, dict[str, str]] | None = None  # client, filters

    # ------------------------------------------------------------------ plumbing

    @initialize()
    def start(self) -> None:
        self.open_client("a", short=False)
        self.open_client("b", short=True)
        self.remember()

    def teardown(self) -> None:
        for c in self.clients.values():
            c.client.close()
        for c in self.clients.values():
            c.client.flush_cache()
        self.sim.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def open_client(self, name: str, *, short: bool) -> None:
        client = mf.MihuClient(
            self.sim.base_url,
            token=self.sim.token,
            cache=self.cache_path,
            expire_after=SHORT if short else LONG,
            backoff_factor=0.01,
            timeout=10,
            max_workers=4,
        )
        self.clients[name] = Client(name, client, short)

    @property
    def version(self) -> int:
        return len(self.snapshots) - 1

    @property
    def now(self) -> Snapshot:
        return self.snapshots[-1]

    def remember(self, changed: set[str] | None = None) -> None:
        """Take the server's state as the next version (``changed``: conversations moved)."""
        sessions, status, type_ = {}, {}, {}
        for c in self.sim.conversation_uuids:
            # ids are canonical lower-case in every frame and root, however the server spells them
            sessions[c] = [
                {**s, "conversation_uuid": s["conversation_uuid"].lower()}
                for s in self.sim.ground_truth(c)
            ]
            status[c] = {s["uuid"]: v for v in STATUSES for s in self.sim.ground_truth(c, status=v)}
            type_[c] = {s["uuid"]: v for v in TYPES for s in self.sim.ground_truth(c, type=v)}
            self.cversion.setdefault(c, 0)
        for c in changed or ():
            self.cversion[c] += 1
        listing = self.sim.conversations_truth(sort_dir="asc")
        self.snapshots.append(Snapshot(sessions, status, type_, listing))

    def record_fetches(self, client: Client | None) -> list[Key]:
        """The queries that reached the server in this step; with a cache, their latest fetch."""
        keys = []
        for r in list(self.sim.requests):
            if r.status != 200 or r.endpoint not in ("sessions", "conversations"):
                continue
            key = key_of(r.endpoint, r.conversation or "", r.params)
            keys.append(key)
            if client is not None:
                self.fetched[key] = Fetch(self.version, client.short, self.epoch)
                self.maybe_missing.discard(key)
        return keys

    def served_version(self, key: Key, requested: set[Key], offline: bool) -> int | None:
        """The server state a query's answer must show; None: a CacheMissError is due."""
        if key in requested:
            return self.version
        fetch = self.fetched.get(key)
        if offline:
            return None if fetch is None else fetch.version
        assert fetch is not None, f"answered without a request, never fetched with a cache: {key}"
        expired = fetch.short and fetch.epoch < self.epoch
        assert not expired, f"answered from an expired cached listing (fetched v{fetch.version})"
        return fetch.version

    def uncached(self) -> dict[str, Any]:
        """The options of a one-call load or sync without a cache, on the simulator."""
        return {
            "base_url": self.sim.base_url,
            "token": self.sim.token,
            "cache": None,
            "backoff_factor": 0.01,
        }

    def spell(self, ids: list[str], how: str) -> list[Any]:
        if how == "upper":
            return [c.upper() for c in ids]
        if how == "uuid":
            return [uuidlib.UUID(c) for c in ids]
        if how == "mixed":
            return [c.upper() if i % 2 else c for i, c in enumerate(ids)]
        return list(ids)

    def group(self, conversation: str) -> set[str]:
        """The conversation and every conversation serving one of its sessions too."""
        out = {conversation}
        for owners in self.shared.values():
            if conversation in owners:
                out |= owners
        return out

    # ------------------------------------------------------------------ the server moves on

    @rule(data=st.data())
    def server_changes(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(self.sim.conversation_uuids[1:]), label="conversation")
        kind = data.draw(st.sampled_from(["add", "touch", "delete"]), label="change")
        n = data.draw(st.integers(1, 4), label="n")
        if kind == "add":
            self.sim.add_sessions(c, n)
        elif kind == "touch":
            self.sim.touch_sessions(c, n)
        else:
            gone = self.sim.delete_sessions(c, n)
            for u in gone:
                if u in self.shared:
                    self.shared[u].discard(c)
        self.remember({c})

    @rule(size=st.sampled_from([0, 2, 25]))
    def new_conversation(self, size: int) -> None:
        c = self.sim.add_conversation(size)
        self.cversion[c] = 0
        self.remember({c})

    @rule(data=st.data())
    def share_session(self, data: st.DataObject) -> None:
        ids = self.sim.conversation_uuids
        served = {c: {s["uuid"] for s in self.now.sessions[c]} for c in ids}
        owners = [c for c in ids if any(served[c] - served[d] for d in ids)]
        if not owners:
            return
        source = data.draw(st.sampled_from(owners), label="from")
        shareable = sorted(u for u in served[source] if any(u not in served[d] for d in ids))
        session = data.draw(st.sampled_from(shareable), label="session")
        targets = [c for c in ids if session not in served[c]]
        target = data.draw(st.sampled_from(targets), label="to")
        self.sim.share_session(session, target)
        self.shared.setdefault(session, {source}).add(target)
        self.remember({target})

    @rule(data=st.data())
    def server_spells_ids_upper_case(self, data: st.DataObject) -> None:
        c = data.draw(st.sampled_from(self.sim.conversation_uuids), label="conversation")
        self.sim.upper_case_ids(c)
        self.remember({c})

    # ------------------------------------------------------------------ the cache ages

    @rule()
    def age(self) -> None:
        """Let every page the short-lived client saved expire (its writes done first)."""
        for c in self.clients.values():
            c.client.flush_cache()
        time.sleep(SHORT + 0.05)
        self.epoch += 1

    @rule(data=st.data())
    def remove_page_row(self, data: st.DataObject) -> None:
        """A page row removed from the cache file (requests-cache's table), as a user might."""
        self.remove_a_page(data, "select key from responses order by key")

    @rule(data=st.data())
    def remove_later_listing_page(self, data: st.DataObject) -> None:
        """A later page of a cached conversations listing removed (its index row stays): the
        listing must be fetched anew whole, as it was asked (a filtered listing once came back
        unfiltered). Found through requests-cache's own API, which knows each page's URL."""
        pick = data.draw(st.integers(0, 1_000), label="listing page")  # see remove_a_page
        for c in self.clients.values():
            c.client.flush_cache()
        if not self.cache_path.exists():
            return
        pages = requests_cache.SQLiteCache(self.cache_path)
        try:
            later = {
                key: parse_qs(urlsplit(response.url).query)
                for key, response in pages.responses.items()
                if urlsplit(response.url).path.endswith("/conversations")
                and int(parse_qs(urlsplit(response.url).query).get("page", ["1"])[0]) > 1
            }
            # the last listing's own pages when it has any (what its next run will read)
            last = (self.last_listing or ("", {}))[1]
            wanted = {k: [v.lower() if k == "agent_uuid" else v] for k, v in last.items()}
            own = [k for k, q in later.items() if all(q.get(n) == v for n, v in wanted.items())]
            keys = sorted(own or later)
            if keys:
                del pages.responses[keys[pick % len(keys)]]
        finally:
            pages.close()
        if keys:
            self.all_missing = True
            self.maybe_missing |= set(self.fetched)

    def remove_a_page(self, data: st.DataObject, candidates: str) -> None:
        """Delete from requests-cache's table one of the page keys ``candidates`` selects."""
        # Which row: drawn before looking, from a fixed range (what the file holds depends on
        # when its writer ran; a draw shaped by it would make Hypothesis' replays differ).
        pick = data.draw(st.integers(0, 1_000), label="page row")
        if not self.cache_path.exists():
            return
        with closing(sqlite3.connect(self.cache_path, timeout=30)) as db, db:
            try:
                keys = [r[0] for r in db.execute(candidates)]
            except sqlite3.OperationalError:  # no page saved yet
                return
            if not keys:
                return
            db.execute("delete from responses where key = ?", (keys[pick % len(keys)],))
        self.all_missing = True
        self.maybe_missing |= set(self.fetched)

    @rule(name=st.sampled_from(["a", "b"]))
    def reopen_client(self, name: str) -> None:
        """A second client on the same cache file (a new notebook), the old one closed."""
        old = self.clients[name]
        old.client.close()
        self.open_client(name, short=old.short)

    # ------------------------------------------------------------------ loads

    @rule(data=st.data())
    def load(self, data: st.DataObject) -> None:
        draw = data.draw
        which = draw(st.sampled_from(["a", "b", "none"]), label="client")
        everything = draw(st.booleans(), label="all")
        ids: list[str] = []
        if not everything:
            ids = draw(
                st.lists(st.sampled_from(self.sim.conversation_uuids), min_size=1, max_size=3),
                label="conversations",
            )
        how = draw(st.sampled_from(["lower", "upper", "uuid", "mixed"]), label="spelling")
        status = draw(
            st.sampled_from([None, "active", "completed", ["active", "timed_out"], "all"]),
            label="status",
        )
        type_ = draw(st.sampled_from([None, "voice", ["text"], "all"]), label="type")
        mode = (
            "fresh" if which == "none" else draw(st.sampled_from(["cache", "refresh", "offline"]))
        )
        options: dict[str, Any] = {"per_page": PER_PAGE, "status": status, "type": type_}
        if mode == "refresh":
            options["refresh"] = True
        if mode == "offline":
            options["offline"] = True
        target: Any = "all" if everything else self.spell(ids, how)
        client = self.clients.get(which)
        self.sim.reset_requests()
        try:
            if client is None:
                df = mf.load_sessions(target, **self.uncached(), **options)
            else:
                df = client.client.sessions(target, **options)
        except mf.CacheMissError:
            assert mode == "offline", "CacheMissError without offline=True"
            self.check_cache_miss(everything, ids, status, type_)
            return
        requested = set(self.record_fetches(client))
        check_frame(df)
        # the conversations of the plan, in order, lower-case
        if everything:
            listed = listing_key({}, PER_PAGE)
            version = self.served_version(listed, requested, mode == "offline")
            assert version is not None, "offline 'all' answered without a cached listing"
            plan_ids = self.snapshots[version].listed({})
        else:
            plan_ids = list(dict.fromkeys(c.lower() for c in ids))
        statuses = (
            list(STATUSES) if status == "all" else status if isinstance(status, list) else [status]
        )
        types = list(TYPES) if type_ == "all" else type_ if isinstance(type_, list) else [type_]
        expected: dict[str, list[tuple[dict[str, Any], str | None, str | None]]] = {}
        for c in plan_ids:
            for s in statuses:
                for t in types:
                    version = self.served_version(
                        session_key(c, s, t), requested, mode == "offline"
                    )
                    assert version is not None, f"offline answered a query never cached: {c}"
                    for row in self.snapshots[version].rows(c, s, t):
                        expected.setdefault(row["uuid"], []).append((row, s, t))
        got = frame_rows(df)
        assert set(got) == set(expected), (
            f"{len(set(expected) - set(got))} sessions missing, "
            f"{len(set(got) - set(expected))} not expected "
            f"({len(got)} rows, {len(expected)} expected)"
        )
        tags = dict(
            zip(
                df["uuid"],
                zip(df["status"].astype(object), df["type"].astype(object), strict=True),
                strict=True,
            )
        )
        for u, candidates in expected.items():
            wants = [
                (
                    expected_rows([row])[0],
                    "untagged" if s is None else s,
                    "untagged" if t is None else t,
                )
                for row, s, t in candidates
            ]
            have = (got[u], *tags[u])
            assert have in wants, (u, have, wants[0])
        if status is None and type_ is None and len(df):
            self.last_frame = df

    def check_cache_miss(self, everything: bool, ids: list[str], status: Any, type_: Any) -> None:
        """Offline: a CacheMissError is right only when a query's pages may be missing."""
        assert self.sim.request_count == 0, "offline=True sent requests"
        if self.all_missing or everything:
            return
        statuses = (
            list(STATUSES) if status == "all" else status if isinstance(status, list) else [status]
        )
        types = list(TYPES) if type_ == "all" else type_ if isinstance(type_, list) else [type_]
        keys = [session_key(c.lower(), s, t) for c in ids for s in statuses for t in types]
        assert any(k not in self.fetched or k in self.maybe_missing for k in keys), (
            "CacheMissError although every query's latest fetch is cached"
        )

    def draw_filters(self, draw: Any) -> dict[str, str]:
        """Listing filters: any of channel, status and agent (in either case)."""
        filters: dict[str, str] = {}
        if draw(st.booleans(), label="by channel"):
            filters["channel"] = draw(st.sampled_from(["whatsapp", "web", "sms", "phone"]))
        if draw(st.booleans(), label="by status"):
            filters["status"] = draw(st.sampled_from(["open", "closed"]))
        if draw(st.booleans(), label="by agent"):
            agents = [c["agent_uuid"] for c in self.now.listing if c["agent_uuid"]]
            agent = draw(st.sampled_from(agents or [str(uuidlib.UUID(int=1))]))
            filters["agent_uuid"] = agent.upper() if draw(st.booleans()) else agent
        return filters

    @rule(data=st.data())
    def listing(self, data: st.DataObject) -> None:
        draw = data.draw
        which = draw(st.sampled_from(["a", "b", "none"]), label="client")
        filters = self.draw_filters(draw)
        mode = (
            "fresh" if which == "none" else draw(st.sampled_from(["cache", "refresh", "offline"]))
        )
        self.last_listing = (which, filters)
        self.run_listing(which, filters, mode)

    @precondition(lambda self: self.last_listing is not None)
    @rule(data=st.data())
    def listing_again(self, data: st.DataObject) -> None:
        """The last listing asked again from its client's cache (a notebook cell run again),
        sometimes after one of its later pages was lost from the cache file."""
        assert self.last_listing is not None
        if data.draw(st.booleans(), label="a page of it lost first"):
            self.remove_later_listing_page(data)
        which, filters = self.last_listing
        self.run_listing(which, filters, "fresh" if which == "none" else "cache")

    def run_listing(self, which: str, filters: dict[str, str], mode: str) -> None:
        """List the conversations under ``filters`` and check them against the model."""
        options: dict[str, Any] = {"per_page": LIST_PER_PAGE, **filters}
        if mode == "refresh":
            options["refresh"] = True
        if mode == "offline":
            options["offline"] = True
        client = self.clients.get(which)
        self.sim.reset_requests()
        try:
            if client is None:
                convs = mf.list_conversations(**self.uncached(), **options)
            else:
                convs = client.client.conversations(**options)
        except mf.CacheMissError:
            assert mode == "offline"
            key = listing_key(filters, LIST_PER_PAGE)
            assert self.all_missing or key not in self.fetched or key in self.maybe_missing
            return
        requested = set(self.record_fetches(client))
        version = self.served_version(
            listing_key(filters, LIST_PER_PAGE), requested, mode == "offline"
        )
        assert version is not None
        want = self.snapshots[version].listed(filters)
        got = convs["uuid"].tolist()
        assert got == want, f"listing under {filters}: {len(got)} rows, {len(want)} expected"
        canonical = {k: v.lower() if k == "agent_uuid" else v for k, v in filters.items()}
        assert convs.attrs["mihu_frames"]["filters"] == canonical

    # ------------------------------------------------------------------ snapshots

    @precondition(lambda self: self.last_frame is not None)
    @rule()
    def write(self) -> None:
        df = self.last_frame
        assert df is not None
        rows = actual_rows(df)
        changed = 0
        for row, fetched in zip(rows, df["fetched_at"], strict=True):
            held = self.written.get(row["uuid"])
            if held is None:
                self.written[row["uuid"]] = (row, fetched)
                changed += 1
            elif held[0] != row:
                changed += 1
                if fetched >= held[1]:
                    self.written[row["uuid"]] = (row, fetched)
        path = mf.write_snapshot(df, self.write_root)
        assert (path is None) == (changed == 0), f"{changed} rows new or changed, wrote {path}"
        self.check_written()

    @precondition(lambda self: self.last_frame is not None)
    @rule(zone=st.sampled_from(["Europe/Berlin", "UTC", "Asia/Kolkata"]))
    def write_naive(self, zone: str) -> None:
        """A frame built by hand with tz-naive times is refused, naming the column."""
        df = self.last_frame.copy()
        df["started_at"] = df["started_at"].dt.tz_convert(zone).dt.tz_localize(None)
        before = sorted(p.name for p in self.write_root.rglob("*.parquet"))
        with pytest.raises(ValueError, match="started_at"):
            mf.write_snapshot(df, self.write_root)
        assert sorted(p.name for p in self.write_root.rglob("*.parquet")) == before

    def check_written(self) -> None:
        df = mf.read_snapshots(self.write_root)
        check_frame(df)
        got = frame_rows(df)
        assert set(got) == set(self.written)
        for u, (row, _) in self.written.items():
            assert got[u] == row, u

    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        draw = data.draw
        which = draw(st.sampled_from(["a", "b", "none"]), label="client")
        choices = ["named", "all"] + (["remembered"] if self.sync_all else [])
        what = draw(st.sampled_from(choices), label="conversations")
        full = draw(st.booleans(), label="full")
        ids: list[str] = []
        target: Any
        if what == "named":
            ids = draw(
                st.lists(st.sampled_from(self.sim.conversation_uuids), min_size=1, max_size=3),
                label="ids",
            )
            how = draw(st.sampled_from(["lower", "upper", "uuid", "mixed"]), label="spelling")
            target = self.spell(ids, how)
        else:
            target = "all" if what == "all" else None
        self.run_sync(which, what, full, ids, target)

    def run_sync(
        self,
        which: str,
        what: str,
        full: bool,
        ids: list[str],
        target: Any,
        *,
        after_a_kill: bool = False,
    ) -> None:
        """A sync in this process, checked against the model (the ``sync`` rule's work);
        ``after_a_kill``: a killed process may have committed the same sync already, so what
        this one writes is not counted."""
        synced = (
            list(dict.fromkeys(c.lower() for c in ids))
            if what == "named"
            else list(self.sim.conversation_uuids)
        )
        # nothing changed on the server since each one's last sync: nothing may be written
        unchanged = all(
            c in self.sync_marks
            and all(self.cversion[d] == v for d, v in self.sync_marks[c].items())
            and self.group(c) <= set(self.sync_marks[c])
            for c in synced
        )
        client = self.clients.get(which)
        options: dict[str, Any] = {"per_page": PER_PAGE, "full": full}
        self.sim.reset_requests()
        if client is None:
            df = mf.sync_snapshots(self.sync_root, target, **self.uncached(), **options)
        else:
            df = mf.sync_snapshots(self.sync_root, target, client=client.client, **options)
        self.record_fetches(client)
        if what == "all":
            self.sync_all = True
        a = df.attrs["mihu_frames"]
        note(f"sync {what} {synced}: new {a['rows_new']}, changed {a['rows_changed']}")
        shared_here = {u for u, owners in self.shared.items() if owners & set(synced)}
        changes = 0
        for c in synced:
            for row in expected_rows(self.now.sessions[c]):
                if row["uuid"] in shared_here:
                    self.synced[row["uuid"]] = None
                    continue
                if self.synced.get(row["uuid"]) != row:
                    changes += 1
                self.synced[row["uuid"]] = row
            self.sync_marks[c] = {d: self.cversion[d] for d in self.group(c)}
        written = a["rows_new"] + a["rows_changed"]
        if after_a_kill:
            check_frame(df)
            self.check_synced(df, synced)
            return
        if unchanged:
            assert a["snapshot"] is None and written == 0, (
                f"a sync with nothing changed since the last one wrote {written} rows"
            )
        assert changes <= written <= changes + len(shared_here), (changes, written)
        check_frame(df)
        self.check_synced(df, synced)

    @rule(delay=st.floats(0.2, 1.6))
    def killed_sync(self, delay: float) -> None:
        """A sync of every conversation killed (SIGKILL) at a random moment in another process:
        the root reads as it was before or as it is after a sync completes, never a mix, its
        history each version once (a version copied to versions/ before the kill is read once);
        the next sync (here, in this process) lands on top of it."""

        def state() -> dict[str, dict[str, Any]] | None:
            try:
                return frame_rows(mf.read_snapshots(self.sync_root))
            except mf.NotASnapshotRootError:
                return None

        before = state()
        code = (
            "import sys, mihu_frames as mf\n"
            "mf.sync_snapshots(sys.argv[1], list(sys.argv[4:]), base_url=sys.argv[2],"
            f" token=sys.argv[3], cache=None, per_page={PER_PAGE}, progress=False)"
        )
        args = [str(self.sync_root), self.sim.base_url, self.sim.token]
        child = subprocess.Popen(
            [sys.executable, "-c", code, *args, *self.sim.conversation_uuids],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
        note(f"killed sync: exit {child.returncode} after {delay:.2f} s")
        between = state()
        if between is not None:
            history = mf.read_snapshots(self.sync_root, latest=False)
            assert not history.duplicated(["uuid", "snapshot_id", "fetched_at"]).any()
            assert set(between) <= set(history["uuid"])
        ids = list(self.sim.conversation_uuids)
        self.run_sync("none", "named", False, ids, ids, after_a_kill=True)
        after = state()
        assert between in (before, after), "a killed sync left a state that was never committed"

    def check_synced(self, df: pd.DataFrame, conversations: list[str]) -> None:
        got = frame_rows(df)
        wanted = {
            u
            for u, row in self.synced.items()
            if row is not None and row["conversation_uuid"] in conversations
        }
        assert wanted <= set(got), f"{len(wanted - set(got))} synced sessions not returned"
        for u in wanted:
            assert got[u] == self.synced[u], u
        for u, row in got.items():
            assert u in self.synced, f"{u} returned but never served"
            assert row["conversation_uuid"] in conversations

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        draw = data.draw
        which = draw(st.sampled_from(["synced", "written"]), label="root")
        root = self.sync_root if which == "synced" else self.write_root
        held = (
            {u: r for u, r in self.synced.items()}
            if which == "synced"
            else {u: r for u, (r, _) in self.written.items()}
        )
        if not held:
            return
        ids = None
        if draw(st.booleans(), label="by conversation"):
            ids = draw(
                st.lists(st.sampled_from(self.sim.conversation_uuids), min_size=1, max_size=2)
            )
            how = draw(st.sampled_from(["lower", "upper", "mixed"]), label="spelling")
            ids = self.spell(ids, how)
        since = None
        if draw(st.booleans(), label="since"):
            stamps = sorted(r["updated_at"] for r in held.values() if r and r["updated_at"])
            since = draw(st.sampled_from(stamps)) if stamps else None
        columns = None
        if draw(st.booleans(), label="columns"):
            columns = ["uuid", "conversation_uuid", "updated_at", "duration"]
        df = mf.read_snapshots(root, conversations=ids, since=since, columns=columns)
        assert df["uuid"].is_unique
        lowered = None if ids is None else {c.lower() for c in ids}
        got = set(df["uuid"])
        for u, row in held.items():
            if row is None:  # a session served under two conversations: held under one
                continue
            match = (lowered is None or row["conversation_uuid"] in lowered) and (
                since is None or (row["updated_at"] is not None and row["updated_at"] >= since)
            )
            assert (u in got) == match, (u, match, ids, since)
        assert got <= set(held)
        if columns is not None:
            assert set(df.columns) == set(columns)

    @precondition(lambda self: self.sync_marks or self.written)
    @rule(which=st.sampled_from(["synced", "written"]))
    def compact(self, which: str) -> None:
        root = self.sync_root if which == "synced" else self.write_root
        if not root.exists():
            return
        latest = mf.read_snapshots(root)
        history = mf.read_snapshots(root, latest=False)
        mf.compact_snapshots(root)
        pd.testing.assert_frame_equal(mf.read_snapshots(root), latest)
        after = mf.read_snapshots(root, latest=False)
        versions = set(
            zip(history["uuid"], history["updated_at"], history["conversation_uuid"], strict=True)
        )
        assert (
            set(zip(after["uuid"], after["updated_at"], after["conversation_uuid"], strict=True))
            == versions
        )


@pytest.mark.timeout(max(300, 40 * EXAMPLES))  # a longer run (MIHU_MODEL_EXAMPLES) may take it
def test_the_library_against_its_model(tmp_path: Path) -> None:
    """Random interleavings of loads, listings, snapshots and a moving server and cache."""
    LibraryModel.folder = tmp_path
    run_state_machine_as_test(LibraryModel, settings=MODEL_SETTINGS)
