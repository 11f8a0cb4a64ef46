"""Hostile servers against the load path: one test (or one parametrized group) per failure found.

Each section is one finding of the adversarial review; the servers are in ``tests/hostile.py``
(purpose-built, not the simulator) and the first section checks that they do what they claim.

1. Deep JSON: an undocumented value nested 20,000+ levels segfaults pyarrow's reader; 2,000 to
   6,000 levels stall it. Undocumented values nest at most 64 levels (kept in ``extra``); deeper
   is a ``ResponseFormatError`` within a second.
2. Compressed bodies: a gzip body inflating to 1 GiB is read whole. ``max_page_bytes`` (client
   option, default 32 MiB) is counted while the body is read.
3. Page counts: ``last_page = 10**9`` submits a future per page. ``max_pages`` (load option,
   default 100,000) refuses it before page 2 is asked; a listing that grows on every response is
   refused after a bounded number of rounds.
4. Time: a reply dripping one byte a second never times out. ``timeout`` bounds each whole
   response (``ResponseTimeoutError``); ``deadline`` (load option) bounds a whole load
   (``DeadlineExceededError``).
5. Cached and fresh pages mixed: the result must equal the server's listing as it is now.
6. The token echoed by the server never reaches errors, warnings, attrs, logs or files.
7. A conversation id is exactly a canonical UUID string or a ``uuid.UUID``; anything else is a
   ``ValueError`` before any request, from every entry point and the CLI.
8. Every folder the library creates is 0700, also with umask 022.

Tests that need a child process (a crash must fail the test, not kill the worker; peak RSS is
measured there) are marked ``child`` and grouped in the last section. Every test has a
``timeout`` mark, so a hang is a failure.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import socket
import stat
import subprocess
import sys
import time
import traceback
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import urllib3
from hostile import (
    DEEP_PLACEMENTS,
    ECHO_KINDS,
    TOKEN,
    ChildRun,
    ClaimedPages,
    Drip,
    Echo,
    Fixed,
    Growing,
    HostileServer,
    Listing,
    Reply,
    Request,
    Route,
    conversation_id,
    deep_page,
    dumps,
    files_under,
    gzip_bomb,
    json_depth,
    make_session,
    nested,
    page_payload,
    run_child,
    run_load_in_child,
    serve,
)

import mihu_frames as mf

pytestmark = pytest.mark.timeout(30)

CONVERSATION = conversation_id(1)
#: Options of every load here unless a test is about them: fail fast, no cache, no bar.
FAST: dict[str, Any] = {"timeout": 2, "retries": 0, "cache": None, "progress": False}
#: Peak RSS a child process may reach (a plain small load peaks near 170 MB).
RSS_LIMIT_MB = 300
#: Wall time of a load in a child process.
WALL_LIMIT = 10.0


def new_error(name: str) -> type[Exception]:
    """``mf.<name>``, an error class the fix adds.

    Until it exists: a stand-in nothing raises, so a test fails on what the load really does
    today (hangs, crashes, raises something else), not on the missing name.
    """
    found = getattr(mf, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return type(f"{name}_not_in_mihu_frames_yet", (Exception,), {})


def _digits(text: str) -> str:
    """``text`` with digit-group separators removed (``1,000,000`` -> ``1000000``)."""
    return re.sub(r"(?<=\d)[,_ \u202f](?=\d)", "", text)


def _names_number(text: str, number: int) -> bool:
    return re.search(rf"(?<![\d.]){number}(?![\d.])", _digits(text)) is not None


def _names_byte_limit(text: str, limit: int) -> bool:
    """Whether a message names the byte limit ``limit`` (as bytes, MiB, MB or the option)."""
    spelled = {f"{limit / 2**20:g} MiB", f"{limit / 2**20:g}MiB", f"{limit / 1e6:g} MB"}
    return _names_number(text, limit) or any(s in text for s in spelled)


@pytest.fixture
def listing() -> Iterator[tuple[HostileServer, Listing]]:
    """A small well-behaved listing: conversation 1 with 250 sessions, 2 with 3."""
    behaviour = Listing([250, 3])
    with serve(behaviour) as server:
        yield server, behaviour


# =========================================================================== the toolkit itself


def _raw_get(server: HostileServer, path: str, *, timeout: float = 5) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
    sock.settimeout(timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@pytest.mark.parametrize("placement", DEEP_PLACEMENTS)
def test_toolkit_deep_page_is_valid_json_nested_as_claimed(placement):
    outer = {"session": 4, "contact": 5, "envelope": 1, "paginator": 2}[placement]
    for shape in ("list", "object", "mixed"):
        for depth in (0, 1, 64, 65, 2_000, 50_000):
            body = deep_page(CONVERSATION, placement, depth, shape)
            assert json_depth(body) == max(depth + outer, 5)  # 5: a contact in the page
            assert json_depth(nested(depth, shape).encode()) == depth
        # json.loads agrees where it can read the body at all
        small = deep_page(CONVERSATION, placement, 64, shape)
        assert json.loads(small)["success"] is True
    body = deep_page(CONVERSATION, placement, 50_000)
    with serve(Fixed(Reply(body=body))) as server:
        http = urllib3.PoolManager()
        reply = http.request("GET", server.url(CONVERSATION), retries=False)
        assert reply.status == 200 and reply.data == body
    # and the checker rejects what is not JSON
    for broken in (body[:-1], body + b"]", body.replace(b"[0]", b"[0,]", 1), b"{'a':1}", b""):
        with pytest.raises(ValueError):
            json_depth(broken)


def test_toolkit_json_depth_agrees_with_json_loads():
    good = [b"0", b'"x"', b" [ ] ", b"{}", b'{"a":[1,2.5e3,{"b":null}],"c":"\\u00e9"}']
    for text in good:
        json.loads(text)
        json_depth(text)
    assert [json_depth(t) for t in good] == [0, 0, 1, 1, 3]
    for text in (b"[1,]", b'{"a"}', b'{"a":1,}', b"[1 2]", b"01", b"[", b'"\x01"', b"nul"):
        with pytest.raises(ValueError):
            json.loads(text)
        with pytest.raises(ValueError):
            json_depth(text)


@pytest.mark.timeout(120)
def test_toolkit_gzip_bomb_is_a_megabyte_that_inflates_to_a_gibibyte():
    with serve(Fixed(Reply(body=gzip_bomb(), headers=[("Content-Encoding", "gzip")]))) as server:
        http = urllib3.PoolManager()
        reply = http.request("GET", server.url(CONVERSATION), preload_content=False, retries=False)
        assert reply.status == 200
        assert reply.headers["Content-Encoding"] == "gzip"
        assert 900_000 < int(reply.headers["Content-Length"]) < 1_200_000
        inflated = 0
        for chunk in reply.stream(8 << 20, decode_content=True):
            inflated += len(chunk)
            assert not chunk.strip(b"\0")
        reply.release_conn()
    assert inflated == 1 << 30


def test_toolkit_a_small_bomb_is_a_valid_gzip_stream():
    body = gzip_bomb(8 << 20)
    decoder = zlib.decompressobj(31)
    assert decoder.decompress(body) == bytes(8 << 20)
    assert decoder.eof and not decoder.unused_data  # the CRC and length trailer checked out


@pytest.mark.timeout(20)
def test_toolkit_drip_sends_one_byte_at_a_time_and_a_read_timeout_never_fires():
    with serve(Drip(0.2)) as server:
        sock = _raw_get(server, f"/api/v1/conversations/{CONVERSATION}/sessions?page=1")
        sock.settimeout(1.0)  # a read timeout longer than the gap between bytes
        started = time.monotonic()
        data, reads = b"", 0
        while len(data) < 8:
            data += sock.recv(8 - len(data))
            reads += 1
        elapsed = time.monotonic() - started
        sock.close()
    assert data == b"HTTP/1.1"  # the status line drips too
    assert reads >= 5  # in pieces, not at once
    assert elapsed >= 7 * 0.2 * 0.9

    # urllib3's read timeout restarts on every byte: 8 bytes over 1.4 s with read=1.0
    with serve(Drip(0.2, body_only=True)) as server:
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=1.0))
        reply = http.request("GET", server.url(CONVERSATION), preload_content=False)
        assert reply.status == 200  # headers arrive at once
        started = time.monotonic()
        body = b"".join(reply.read(1) for _ in range(8))
        elapsed = time.monotonic() - started
        assert body == b'{"succes'
        assert elapsed >= 7 * 0.2 * 0.9
        reply.release_conn()


def test_toolkit_drip_with_no_gap_is_a_valid_page_and_stopping_ends_it():
    with serve(Drip(0.0)) as server:
        reply = urllib3.PoolManager().request("GET", server.url(CONVERSATION, per_page=100))
        payload = json.loads(reply.data)
        assert reply.status == 200 and len(payload["data"]["data"]) == 3
    server = HostileServer(Drip(5.0)).start()
    sock = _raw_get(server, f"/api/v1/conversations/{CONVERSATION}/sessions")
    assert sock.recv(1) == b"H"
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    sock.settimeout(2)
    assert sock.recv(64) == b""  # the connection was closed, not left dripping
    sock.close()


def test_toolkit_claimed_pages_and_growing_listing():
    with serve(ClaimedPages(10**9)) as server:
        http = urllib3.PoolManager()
        data = json.loads(http.request("GET", server.url(CONVERSATION, per_page=100)).data)
        assert data["data"]["last_page"] == 10**9 and data["data"]["total"] == 10**11
        later = json.loads(http.request("GET", server.url(CONVERSATION, page=777)).data)
        assert later["data"]["current_page"] == 777 and len(later["data"]["data"]) == 15
    with serve(Growing()) as server:
        claims = [
            json.loads(urllib3.request("GET", server.url(CONVERSATION, page=1)).data)["data"]
            for _ in range(4)
        ]
        assert [c["last_page"] for c in claims] == [2, 3, 4, 5]
        assert all(c["total"] == c["last_page"] * 15 for c in claims)
        assert server.pages(CONVERSATION) == [1, 1, 1, 1]


def test_toolkit_listing_pages_changes_failures_and_latency():
    behaviour = Listing([25], latency=0.3)
    with serve(behaviour) as server:
        http = urllib3.PoolManager()

        def page(n: int) -> dict[str, Any]:
            url = server.url(CONVERSATION, page=n, per_page=10, sort_by="created_at")
            reply = http.request("GET", url + "&sort_dir=asc", retries=False)
            return json.loads(reply.data)["data"] if reply.status == 200 else {"status": 500}

        started = time.monotonic()
        pages = [page(n) for n in (1, 2, 3)]
        assert time.monotonic() - started >= 3 * 0.3 * 0.9
        assert [s["uuid"] for p in pages for s in p["data"]] == behaviour.truth(CONVERSATION)
        assert [p["last_page"] for p in pages] == [3, 3, 3]
        gone = behaviour.delete_at(CONVERSATION, 12)
        new = behaviour.insert_at(CONVERSATION, 0)
        truth = behaviour.truth(CONVERSATION)
        assert gone not in truth and truth[0] == new and len(truth) == 25
        assert [s["uuid"] for s in page(1)["data"]] == truth[:10]
        behaviour.fail_next(CONVERSATION, 2)
        assert page(2) == {"status": 500}
        assert [s["uuid"] for s in page(2)["data"]] == truth[10:20]
        assert server.pages(CONVERSATION) == [1, 2, 3, 1, 2, 2]


@pytest.mark.parametrize("kind", ECHO_KINDS)
def test_toolkit_echo_repeats_the_token_in_body_and_header(kind):
    with serve(Echo(kind)) as server:
        reply = urllib3.PoolManager().request("GET", server.url(CONVERSATION), retries=False)
    assert reply.headers["X-Echo"] == f"Bearer {TOKEN}"
    literal = kind not in ("200-header", "200-escaped")
    assert (f"Bearer {TOKEN}".encode() in reply.data) == literal
    if kind.startswith("200-") and kind != "200-success-false":
        assert json_depth(reply.data) and json.loads(reply.data)["success"] is True
    if kind == "200-escaped":
        assert f"Bearer {TOKEN}" in json.loads(reply.data)["data"]["data"][0]["summary"]
    assert reply.status == {"401": 401, "422": 422, "500-html": 500}.get(kind, 200)
    assert reply.reason.endswith(f"Bearer {TOKEN}")


# =========================================================================== 1. deep JSON


@pytest.mark.parametrize("shape", ["list", "object"])
@pytest.mark.parametrize("placement", DEEP_PLACEMENTS)
def test_undocumented_value_nested_64_levels_loads_and_is_kept(placement, shape):
    body = deep_page(CONVERSATION, placement, 64, shape)
    with serve(Fixed(Reply(body=body))) as server:
        df = mf.load_sessions(CONVERSATION, base_url=server.base_url, token=TOKEN, **FAST)
    assert len(df) == 2
    value = json.loads(nested(64, shape))
    extra = [None if pd.isna(e) else json.loads(e) for e in df["extra"]]
    if placement == "session":
        assert extra == [{"x_deep": value}, None]
    elif placement == "contact":
        assert extra == [{"contact": {"x_deep": value}}, None]
    else:  # envelope fields are not session data
        assert extra == [None, None]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("depth", [65, 2_000, 6_000])
@pytest.mark.parametrize("placement", DEEP_PLACEMENTS)
def test_nesting_deeper_than_64_is_a_response_format_error_within_a_second(placement, depth):
    body = deep_page(CONVERSATION, placement, depth)
    with serve(Fixed(Reply(body=body))) as server:
        started = time.perf_counter()
        with pytest.raises(mf.ResponseFormatError) as info:
            mf.load_sessions(CONVERSATION, base_url=server.base_url, token=TOKEN, **FAST)
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{elapsed:.2f} s to refuse {depth} levels"
    assert info.value.conversation == CONVERSATION and info.value.page == 1


_DECODE_IN_CHILD = """
import pickle, sys
from mihu_frames.decoding import PageInfo, decode_pages
from mihu_frames.decoding.envelope import FieldError
from mihu_frames.errors import ResponseFormatError
bodies = pickle.load(open(sys.argv[1], "rb"))
infos = [PageInfo(conversation="c", page=1, query=i) for i in range(len(bodies))]
try:
    decode_pages(bodies, infos, use_threads=True)
    print("decoded")
except (FieldError, ResponseFormatError) as exc:
    print("refused", type(exc).__name__, getattr(exc, "query", None))
"""


_PAD = b'{"pad": "' + b"a" * 3_000_000


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "broken",
    [b'{"pad": "unterminated}', _PAD + b"}", _PAD + b"\\"],
    ids=["unclosed-string", "unclosed-3MB", "trailing-backslash-3MB"],
)
@pytest.mark.parametrize("placement", ["session", "envelope"])
def test_a_broken_body_cannot_hide_a_deep_one_in_the_same_batch(tmp_path, broken, placement):
    # Measured together with the next bodies, a broken one could carry an open string into
    # them and hide their brackets. A 3 MB body puts the deep one in a block of its own,
    # which the reader parses on another thread whatever it finds in the first block: it
    # would meet the deep value and crash the process (it did, before bodies were measured
    # one by one).
    deep = deep_page(CONVERSATION, placement, 100_000)
    plain = dumps(page_payload([make_session(CONVERSATION, 1)], page=1, per_page=100, total=1))
    bodies = tmp_path / "bodies.pickle"
    bodies.write_bytes(pickle.dumps([broken, plain, plain, plain, plain, deep]))
    run = run_child([sys.executable, "-c", _DECODE_IN_CHILD, str(bodies)], timeout=60)
    assert run.returncode == 0, run.describe()
    assert run.stdout.startswith("refused"), run.describe()


# =========================================================================== 2. body size


def _big_page(conversation: str, size: int) -> bytes:
    """A valid 100-session page of about ``size`` bytes (long summaries)."""
    summary = "x" * (size // 100)
    sessions = [make_session(conversation, i, summary=summary) for i in range(100)]
    return dumps(page_payload(sessions, page=1, per_page=100, total=100))


def test_plain_body_larger_than_max_page_bytes_is_refused():
    body = _big_page(CONVERSATION, 1_500_000)
    assert len(body) > 1_500_000
    with (
        serve(Fixed(Reply(body=body))) as server,
        pytest.raises(mf.ResponseFormatError) as info,
    ):
        mf.load_sessions(
            CONVERSATION, base_url=server.base_url, token=TOKEN, max_page_bytes=1_000_000, **FAST
        )
    assert _names_byte_limit(str(info.value), 1_000_000), str(info.value)
    assert info.value.conversation == CONVERSATION and info.value.page == 1


def test_a_body_within_max_page_bytes_loads():
    body = _big_page(CONVERSATION, 600_000)
    with serve(Fixed(Reply(body=body))) as server:
        df = mf.load_sessions(
            CONVERSATION, base_url=server.base_url, token=TOKEN, max_page_bytes=1_000_000, **FAST
        )
    assert len(df) == 100


@pytest.mark.timeout(60)
def test_compressed_body_is_counted_inflated_against_max_page_bytes():
    bomb = gzip_bomb(64 << 20)  # 64 KB on the wire, 64 MiB inflated
    with serve(Fixed(Reply(body=bomb, headers=[("Content-Encoding", "gzip")]))) as server:
        started = time.perf_counter()
        with pytest.raises(mf.ResponseFormatError) as info:
            mf.load_sessions(
                CONVERSATION,
                base_url=server.base_url,
                token=TOKEN,
                max_page_bytes=1_000_000,
                **FAST,
            )
        elapsed = time.perf_counter() - started
    assert _names_byte_limit(str(info.value), 1_000_000), str(info.value)
    assert elapsed < 2.0


# =========================================================================== 3. page counts


def test_max_pages_refuses_a_larger_listing_before_asking_for_page_2():
    with serve(ClaimedPages(10)) as server:
        with pytest.raises(mf.ResponseFormatError) as info:
            mf.load_sessions(
                CONVERSATION,
                base_url=server.base_url,
                token=TOKEN,
                per_page=7,
                max_pages=5,
                **FAST,
            )
        asked = server.pages()
    assert asked == [1]
    assert _names_number(str(info.value), 10), str(info.value)
    assert info.value.conversation == CONVERSATION


def test_a_listing_of_exactly_max_pages_loads():
    with serve(ClaimedPages(10)) as server:
        df = mf.load_sessions(
            CONVERSATION,
            base_url=server.base_url,
            token=TOKEN,
            per_page=7,
            max_pages=10,
            **FAST,
        )
        assert sorted(server.pages()) == list(range(1, 11))
    assert len(df) == 70


def test_a_listing_that_grows_on_every_response_is_refused_after_bounded_rounds():
    growing = Growing()
    with serve(growing) as server:
        started = time.perf_counter()
        with pytest.raises(mf.ResponseFormatError) as info:
            mf.load_sessions(
                CONVERSATION, base_url=server.base_url, token=TOKEN, per_page=10, **FAST
            )
        elapsed = time.perf_counter() - started
        time.sleep(0.3)  # nothing is still asking after the error
        asked = len(server.requests)
    assert re.search(r"grow", str(info.value), re.I), str(info.value)
    assert info.value.conversation == CONVERSATION
    assert asked < 50
    assert elapsed < 10


def test_a_failed_conversation_is_left_out_whole_whatever_its_rows_claim():
    # Rows go by the conversation they were asked for: a row of page 1 that names another
    # conversation must not survive its conversation's failure on page 2.
    other = conversation_id(7)
    rows = [make_session(CONVERSATION, 0), make_session(CONVERSATION, 1)]
    rows.append({**make_session(CONVERSATION, 2), "conversation_uuid": other})

    def reply(request: Request) -> Reply:
        if request.page == 2:
            return Reply(status=404, body=dumps({"success": False, "message": "gone"}))
        return Reply(body=dumps(page_payload(rows, page=1, per_page=3, total=6)))

    with serve(reply) as server:
        df = mf.load_sessions(
            CONVERSATION, base_url=server.base_url, token=TOKEN, on_error="skip", **FAST
        )
    assert df.empty
    [error] = df.attrs["mihu_frames"]["errors"]
    assert (error["conversation"], error["page"], error["error"]) == (
        CONVERSATION,
        2,
        "NotFoundError",
    )


def test_a_growing_listing_is_left_out_under_warn_and_the_other_loads():
    normal = Listing([250])
    grower = conversation_id(9)
    growing = Growing()
    with serve(Route({CONVERSATION: normal, grower: growing})) as server:
        with pytest.warns(RuntimeWarning, match=grower):
            df = mf.load_sessions(
                [CONVERSATION, grower],
                base_url=server.base_url,
                token=TOKEN,
                on_error="warn",
                **FAST,
            )
        time.sleep(0.3)
        asked = len([r for r in server.requests if r.conversation == grower])
    assert list(df["uuid"]) == normal.truth(CONVERSATION)
    [error] = df.attrs["mihu_frames"]["errors"]
    assert error["conversation"] == grower and error["error"] == "ResponseFormatError"
    assert asked < 50


# =========================================================================== 4. time


def test_new_errors_are_in_the_documented_tree():
    timeout_error = mf.ResponseTimeoutError  # type: ignore[attr-defined]
    deadline_error = mf.DeadlineExceededError  # type: ignore[attr-defined]
    assert issubclass(timeout_error, mf.ServerError)
    assert issubclass(deadline_error, mf.MihuError)
    for cls in (timeout_error, deadline_error):
        error = cls("slow", conversation=CONVERSATION, page=3)
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is cls and (back.conversation, back.page) == (CONVERSATION, 3)
        assert str(back) == str(error) and CONVERSATION in str(error) and "page 3" in str(error)


@pytest.mark.timeout(15)
@pytest.mark.parametrize("body_only", [False, True], ids=["whole-reply-drips", "body-drips"])
def test_a_dripping_reply_times_out_as_a_whole(body_only):
    timeout_error = new_error("ResponseTimeoutError")
    with serve(Drip(1.0, body_only=body_only)) as server:
        started = time.perf_counter()
        with pytest.raises(timeout_error) as info:
            mf.load_sessions(CONVERSATION, base_url=server.base_url, token=TOKEN, **FAST)
        elapsed = time.perf_counter() - started
    assert isinstance(info.value, mf.ServerError)
    assert info.value.conversation == CONVERSATION and info.value.page == 1
    assert elapsed < 4.0, f"{elapsed:.1f} s with timeout=2"


def test_a_slow_reply_within_the_timeout_still_loads():
    slow = Listing([30], latency=1.2)
    with serve(slow) as server:
        df = mf.load_sessions(CONVERSATION, base_url=server.base_url, token=TOKEN, **FAST)
    assert list(df["uuid"]) == slow.truth(CONVERSATION)


@pytest.mark.timeout(30)
def test_deadline_bounds_a_whole_load():
    deadline_error = new_error("DeadlineExceededError")
    slow = Listing([400], latency=0.5)  # 40 pages of 10, half a second each
    with serve(slow) as server:
        started = time.perf_counter()
        with pytest.raises(deadline_error) as info:
            mf.load_sessions(
                CONVERSATION,
                base_url=server.base_url,
                token=TOKEN,
                per_page=10,
                max_workers=2,  # ~10 s without a deadline
                deadline=1.5,
                **FAST,
            )
        elapsed = time.perf_counter() - started
        asked = len(server.requests)
        time.sleep(1.0)
        asked_later = len(server.requests)
    assert isinstance(info.value, mf.MihuError)
    assert isinstance(info.value.page, int) and info.value.page >= 1
    assert info.value.conversation == CONVERSATION
    assert elapsed < 3.0, f"{elapsed:.1f} s with deadline=1.5"
    assert asked_later - asked <= 2, "the load kept asking for pages after its deadline"


# =========================================================================== 5. cached + fresh


@pytest.fixture
def changing(tmp_path) -> Iterator[tuple[Listing, mf.MihuClient]]:
    """A 100-session listing (10 pages of 10) and a client with a real requests-cache file."""
    behaviour = Listing([100])
    with serve(behaviour) as server:
        client = mf.MihuClient(
            server.base_url,
            token=TOKEN,
            cache=tmp_path / "c.sqlite",
            timeout=2,
            retries=0,
            backoff_factor=0.01,
        )
        yield behaviour, client
        client.close()
        client.flush_cache()


def _load(client: mf.MihuClient, **options: Any) -> pd.DataFrame:
    return client.sessions(CONVERSATION, per_page=10, progress=False, **options)


def _load_with_failed_page(listing: Listing, client: mf.MihuClient, page: int) -> None:
    """A load under on_error="warn" whose ``page`` answers 500 last (the others get cached)."""
    listing.fail_next(CONVERSATION, page, delay=0.3)
    with pytest.warns(RuntimeWarning, match=CONVERSATION):
        first = _load(client, on_error="warn")
    assert first.empty
    [error] = first.attrs["mihu_frames"]["errors"]
    assert error["page"] == page


def test_cached_pages_and_a_fresh_page_after_a_deletion(changing):
    listing, client = changing
    _load_with_failed_page(listing, client, 5)
    deleted = listing.delete_at(CONVERSATION, 12)  # on page 2: every later page shifts
    df = _load(client)
    assert deleted not in set(df["uuid"])
    assert list(df["uuid"]) == listing.truth(CONVERSATION)


def test_cached_pages_and_a_fresh_page_after_a_deletion_and_an_insertion(changing):
    listing, client = changing
    _load_with_failed_page(listing, client, 7)
    deleted = listing.delete_at(CONVERSATION, 25)  # on page 3
    inserted = listing.insert_at(CONVERSATION, 75)  # on page 8
    assert len(listing.truth(CONVERSATION)) == 100  # same total, same last_page
    df = _load(client)
    assert deleted not in set(df["uuid"]) and inserted in set(df["uuid"])
    assert list(df["uuid"]) == listing.truth(CONVERSATION)


def test_cached_pages_and_a_fresh_page_after_an_insertion_that_shifts_every_page(changing):
    listing, client = changing
    _load_with_failed_page(listing, client, 3)
    inserted = listing.insert_at(CONVERSATION, 0)  # 101 sessions: every page shifts by one
    df = _load(client)
    assert inserted in set(df["uuid"])
    assert list(df["uuid"]) == listing.truth(CONVERSATION)


def test_a_cached_listing_is_used_whole_or_not_at_all(tmp_path):
    """Pages cached at different times never mix: a failed load caches none of its listing,
    the next load fetches the whole listing, and until it expires the cache serves exactly
    that listing (never some pages of it beside fresh ones); after, the truth."""
    listing = Listing([100])
    with serve(listing) as server:
        client = mf.MihuClient(
            server.base_url,
            token=TOKEN,
            cache=tmp_path / "c.sqlite",
            expire_after=2,
            timeout=2,
            retries=0,
        )
        _load_with_failed_page(listing, client, 6)  # page 6 fails: the listing is not cached
        before = len(server.requests)
        again = _load(client)  # the whole listing, from the network
        assert len(server.requests) - before == 10
        assert list(again["uuid"]) == listing.truth(CONVERSATION)
        cached_truth = list(again["uuid"])
        deleted = listing.delete_at(CONVERSATION, 15)
        inserted = listing.insert_at(CONVERSATION, 85)
        before = len(server.requests)
        within = _load(client)  # within expire_after: the cached listing, whole
        assert len(server.requests) == before
        assert list(within["uuid"]) == cached_truth
        time.sleep(2.2)  # every page of it expired
        df = _load(client)
        client.close()
        client.flush_cache()
    assert deleted not in set(df["uuid"]) and inserted in set(df["uuid"])
    assert list(df["uuid"]) == listing.truth(CONVERSATION)


# =========================================================================== 6. echoed token


def _exception_texts(exc: BaseException) -> list[str | bytes]:
    texts: list[str | bytes] = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    texts.append("".join(traceback.format_exception(exc)))
    texts.append(pickle.dumps(exc))
    back = pickle.loads(pickle.dumps(exc))
    texts += [str(back), repr(back), repr(vars(back))]
    return texts


def _contains_token(text: str | bytes) -> bool:
    return (TOKEN.encode() if isinstance(text, bytes) else TOKEN) in text


@pytest.mark.parametrize("kind", ECHO_KINDS)
def test_an_echoed_token_reaches_no_error_warning_attrs_log_or_file(kind, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    other = conversation_id(2)
    loads = kind in ("200-header", "200-session-fields", "200-escaped")
    texts: list[str | bytes] = []
    with serve(Echo(kind)) as server:
        client = mf.MihuClient(
            server.base_url,
            token=TOKEN,
            cache=tmp_path / "c.sqlite",
            timeout=2,
            retries=0,
            backoff_factor=0.01,
        )
        try:
            raised = client.sessions(CONVERSATION, progress=False)
        except mf.MihuError as exc:
            assert not loads
            texts += _exception_texts(exc)
        else:
            assert loads
            texts.append(raised.to_json(date_format="iso"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = client.sessions([CONVERSATION, other], on_error="warn", progress=False)
        again = client.sessions([CONVERSATION, other], on_error="warn", progress=False)
        texts += [str(w.message) for w in caught]
        texts += [json.dumps(d.attrs, default=str) for d in (df, again)]
        texts += [repr(client)]
        if loads:
            texts += [df.to_json(date_format="iso"), again.to_json(date_format="iso")]
            mf.write_snapshot(df, tmp_path / "snapshots")
        else:
            assert caught, "on_error='warn' warns about the failed conversations"
        client.close()
        client.flush_cache()
    texts.append(caplog.text)
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), record.exc_text or ""]
    assert caplog.records  # the logs really were captured
    leaks = [text[:300] for text in texts if _contains_token(text)]
    assert not leaks
    files = files_under(tmp_path)
    assert any(p.name == "c.sqlite" for p in files)
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path
    if kind == "200-session-fields":
        # Session values are data, but a value holding the token is scrubbed like a message.
        for frame in (df, again):
            rows = frame[frame["conversation_uuid"] == CONVERSATION].reset_index(drop=True)
            assert len(rows) == 3
            for row, column in (
                (0, "summary"),
                (1, "extra"),
                (2, "contact_name"),
                (2, "extra"),
            ):
                value = rows.loc[row, column]
                assert "***" in value and TOKEN not in value, (row, column, value)
    if kind == "200-escaped":
        for frame in (df, again):
            rows = frame[frame["conversation_uuid"] == CONVERSATION].reset_index(drop=True)
            assert rows.loc[0, "summary"] == "The caller read out *** on the call"


# =========================================================================== 7. conversation ids


BAD_IDS: dict[str, Any] = {
    "newline suffix": CONVERSATION + "\n",
    "crlf suffix": CONVERSATION + "\r\n",
    "newline prefix": "\n" + CONVERSATION,
    "leading space": " " + CONVERSATION,
    "trailing space": CONVERSATION + " ",
    "tab": CONVERSATION + "\t",
    "braces": "{" + CONVERSATION + "}",
    "urn": "urn:uuid:" + CONVERSATION,
    "no dashes": CONVERSATION.replace("-", ""),
    "unicode hyphen": CONVERSATION.replace("-", "\u2010", 1),
    "empty": "",
    "bytes": CONVERSATION.encode(),
    "int": 42,
    "uuid as int": uuid.UUID(CONVERSATION).int,
    "None": None,
    "list with a newline one": [conversation_id(2), CONVERSATION + "\n"],
    "list with an int": [conversation_id(2), 42],
    "list with None": [conversation_id(2), None],
    "list with bytes": [conversation_id(2), CONVERSATION.encode()],
}


def _via_load_sessions(server: HostileServer, ids: Any, tmp_path: Path) -> pd.DataFrame:
    return mf.load_sessions(ids, base_url=server.base_url, token=TOKEN, **FAST)


def _via_client(server: HostileServer, ids: Any, tmp_path: Path) -> pd.DataFrame:
    with mf.MihuClient(server.base_url, token=TOKEN, cache=None, retries=0) as client:
        return client.sessions(ids, progress=False)


def _via_sync(server: HostileServer, ids: Any, tmp_path: Path) -> pd.DataFrame:
    return mf.sync_snapshots(
        tmp_path / "snaps", ids, base_url=server.base_url, token=TOKEN, cache=None, progress=False
    )


ENTRY_POINTS = {"load_sessions": _via_load_sessions, "client": _via_client, "sync": _via_sync}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("bad", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_a_conversation_id_that_is_not_a_canonical_uuid_is_refused_before_any_request(
    listing, entry, bad, tmp_path
):
    server, _ = listing
    with pytest.raises(ValueError):
        ENTRY_POINTS[entry](server, bad, tmp_path)
    assert server.requests == []


ACCEPTED: dict[str, Any] = {
    "lower case": CONVERSATION,
    "upper case": CONVERSATION.upper(),
    "uuid.UUID": uuid.UUID(CONVERSATION),
    "mixed list": [uuid.UUID(CONVERSATION), conversation_id(2).upper()],
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("ids", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_canonical_uuid_strings_and_uuid_objects_are_accepted(listing, entry, ids, tmp_path):
    server, behaviour = listing
    df = ENTRY_POINTS[entry](server, ids, tmp_path)
    wanted = [CONVERSATION] + ([conversation_id(2)] if isinstance(ids, list) else [])
    assert sorted(set(df["conversation_uuid"])) == wanted
    assert {r.conversation for r in server.requests} == set(wanted)  # sent lower-case
    assert len(df) == sum(len(behaviour.truth(c)) for c in wanted)


# =========================================================================== 8. folder modes


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    paths = [root, *root.rglob("*")]
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in paths}


def test_every_folder_on_the_way_to_the_cache_file_is_owner_only(listing, tmp_path, umask_022):
    server, _ = listing
    cache = tmp_path / "a" / "b" / "c" / "cache.sqlite"
    with mf.MihuClient(server.base_url, token=TOKEN, cache=cache, timeout=2) as client:
        client.sessions(CONVERSATION, progress=False)
        client.flush_cache()  # the stored load's folder is written in the background
    assert Path(f"{cache}.loads").is_dir()
    modes = _modes(tmp_path / "a")
    folders = {p: m for p, m in modes.items() if (tmp_path / p).is_dir()}
    assert {"a", "a/b", "a/b/c", "a/b/c/cache.sqlite.loads"} <= set(folders)
    assert {p: oct(m) for p, m in folders.items() if m != 0o700} == {}
    assert {p: oct(m) for p, m in modes.items() if p not in folders and m != 0o600} == {}


def test_every_snapshot_folder_is_owner_only(listing, tmp_path, umask_022):
    server, _ = listing
    df = mf.load_sessions(CONVERSATION, base_url=server.base_url, token=TOKEN, **FAST)
    mf.write_snapshot(df, tmp_path / "s" / "t" / "root")
    mf.sync_snapshots(
        tmp_path / "u" / "v" / "root",
        conversation_id(2),
        base_url=server.base_url,
        token=TOKEN,
        cache=None,
        progress=False,
    )
    for top in ("s", "u"):
        modes = _modes(tmp_path / top)
        folders = {p: m for p, m in modes.items() if (tmp_path / p).is_dir()}
        assert any(p.endswith("root/latest") for p in folders)
        assert {p: oct(m) for p, m in folders.items() if m != 0o700} == {}


# =========================================================================== in a child process


def _assert_refused_in_child(run: ChildRun, error: str) -> dict[str, Any]:
    """The child exited normally, reported ``error``, within the time and memory limits."""
    assert run.returncode == 0 and run.killed is None, run.describe()
    result = run.result
    assert result is not None, run.describe()
    assert result["error"] == error, run.describe()
    assert result["seconds"] < WALL_LIMIT, run.describe()
    assert result["maxrss_mb"] < RSS_LIMIT_MB, run.describe()
    return result


@pytest.mark.child
class TestInChildProcess:
    """Loads that crash, balloon or run away today, each in its own interpreter."""

    @pytest.mark.timeout(60)
    def test_the_child_runner_measures_the_child_and_reports_crashes(self, listing):
        server, _ = listing
        ballast = b"x" * (400 << 20)  # this process's peak RSS must not show in the child's
        run = run_load_in_child(CONVERSATION, {"base_url": server.base_url, "token": TOKEN, **FAST})
        del ballast
        assert run.returncode == 0 and run.result is not None, run.describe()
        assert run.result["error"] is None and run.result["rows"] == 250
        assert 20 < run.result["maxrss_mb"] < RSS_LIMIT_MB, run.describe()
        crash = run_child(
            [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"],
            timeout=20,
        )
        assert crash.returncode == 128 + 11 and crash.killed is None, crash.describe()
        hog = run_child(
            [sys.executable, "-c", "x = [b'x' * (50 << 20) for _ in range(40)]"],
            timeout=20,
            memory_limit=300 << 20,
        )
        assert hog.killed == "memory" and hog.watched_rss > 300 << 20, hog.describe()

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("placement", DEEP_PLACEMENTS)
    def test_json_nested_50000_levels_is_refused_without_crashing(self, placement):
        body = deep_page(CONVERSATION, placement, 50_000)
        with serve(Fixed(Reply(body=body))) as server:
            run = run_load_in_child(
                CONVERSATION, {"base_url": server.base_url, "token": TOKEN, **FAST}
            )
        result = _assert_refused_in_child(run, "ResponseFormatError")
        assert "ResponseFormatError" in run.stdout
        assert result["seconds"] < 1.0, run.describe()
        assert result["conversation"] == CONVERSATION and result["page"] == 1

    @pytest.mark.timeout(90)
    def test_a_gzip_bomb_is_refused_at_max_page_bytes_in_bounded_memory(self):
        bomb = Reply(body=gzip_bomb(), headers=[("Content-Encoding", "gzip")])
        with serve(Fixed(bomb)) as server:
            run = run_load_in_child(
                CONVERSATION, {"base_url": server.base_url, "token": TOKEN, **FAST}, timeout=40
            )
        result = _assert_refused_in_child(run, "ResponseFormatError")
        assert _names_byte_limit(result["message"], 32 << 20), run.describe()

    @pytest.mark.timeout(60)
    def test_a_billion_pages_is_refused_before_page_2_in_bounded_memory(self):
        with serve(ClaimedPages(10**9)) as server:
            run = run_load_in_child(
                CONVERSATION, {"base_url": server.base_url, "token": TOKEN, **FAST}, timeout=30
            )
            time.sleep(0.2)
            asked = server.pages()
        result = _assert_refused_in_child(run, "ResponseFormatError")
        assert _names_number(result["message"], 10**9), run.describe()
        assert asked == [1], f"{len(asked)} requests: {asked[:10]}"

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("bad", [CONVERSATION + "\n", "{" + CONVERSATION + "}"])
    def test_the_cli_refuses_a_bad_id_in_one_line_before_any_request(self, listing, bad, tmp_path):
        server, _ = listing
        command = ["fetch", bad, "--no-cache", "--retries", "0", "--root", str(tmp_path)]
        result = subprocess.run(
            [sys.executable, "-m", "mihu_frames", *command],
            capture_output=True,
            text=True,
            timeout=50,
            cwd=tmp_path,
            env={**os.environ, "MIHU_API_TOKEN": TOKEN, "MIHU_BASE_URL": server.base_url},
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert server.requests == []
