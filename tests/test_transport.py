"""The transport: addresses, headers, redirects, gzip, retries in the log, the token, progress."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pandas as pd
import pytest
from conftest import assert_matches_truth

import mihu_frames as mf

CONVERSATION = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the block ends


def test_a_closed_port_is_a_connection_error_naming_the_url_quickly(caplog):
    base_url = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(mf.ConnectionError) as caught:
        mf.load_sessions(CONVERSATION, base_url=base_url, token="t0ken-for-tests", cache=None)
    elapsed = time.monotonic() - started
    error = caught.value
    assert not isinstance(error, mf.ServerError)
    url = f"{base_url}/api/v1/conversations/{CONVERSATION}/sessions"
    assert error.url == url and url in str(error)
    assert "base_url" in str(error) and "MIHU_BASE_URL" in str(error)
    assert elapsed < 5, elapsed  # two connection retries with backoff, not five
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and {r.name for r in retries} == {"mihu_frames"}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # urllib3's own


def test_an_unknown_host_is_a_connection_error_without_retries():
    started = time.monotonic()
    with pytest.raises(mf.ConnectionError, match=r"unknown host|no answer from"):
        mf.load_sessions(CONVERSATION, subdomain="no-such-account-xq7", token="t0ken", cache=None)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("suffix", ["/api/v1", "/api/v1/", "/API/V1"])
def test_a_base_url_ending_in_api_v1_is_accepted(sim, suffix):
    with mf.MihuClient(sim.base_url + suffix, token=sim.token, cache=None) as client:
        assert client.base_url == sim.base_url
        df = client.sessions(sim.conversation_uuids[2], status=None)
    assert_matches_truth(df, sim.ground_truth(sim.conversation_uuids[2]))


def test_the_host_is_spelled_one_way():
    assert mf.MihuClient("HTTPS://ACME.Mihu.AI/", cache=None).base_url == "https://acme.mihu.ai"


_PROGRESS = textwrap.dedent(
    """
    import sys
    import mihu_frames as mf
    from mihu_frames.simulator import Simulator
    with Simulator(sizes=[150, 2500, 1, 40], latency=0.02) as sim:
        mf.load_sessions(sim.conversation_uuids, base_url=sim.base_url, token=sim.token,
                         cache=None, progress=True, max_workers=2)
    """
)


def test_a_progress_bar_written_to_a_file_is_a_few_lines_and_never_runs_backwards():
    result = subprocess.run(
        [sys.executable, "-c", _PROGRESS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    updates = [u for u in result.stderr.replace("\r", "\n").splitlines() if u.strip()]
    assert 1 <= len(updates) <= 6, updates  # about 1.5 s of loading, refreshed every 5 s
    percentages = [int(p) for u in updates for p in pd.Series(u).str.findall(r"(\d+)%")[0]]
    assert percentages == sorted(percentages), updates
    totals = {total for u in updates for _, total in re.findall(r"(\d+)/(\d+)", u)}
    assert totals <= {"29"}, updates  # 2 + 25 + 1 + 1 pages: the total is never a guess


def _body(last_page: int, total: int, per_page: int = 100, sessions: str = "") -> bytes:
    return (
        f'{{"success":true,"message":"ok","data":{{"current_page":1,"data":[{sessions}],'
        f'"last_page":{last_page},"per_page":{per_page},"total":{total}}}}}'
    ).encode()


def test_a_redirect_is_reported_not_followed_with_the_token(server_factory):
    elsewhere = server_factory(
        lambda path, headers: (200, {}, headers.get("Authorization", "").encode())
    )
    redirecting = server_factory(
        lambda path, headers: (302, {"Location": f"{elsewhere.base_url}/steal"}, b"moved")
    )
    client = mf.MihuClient(redirecting.base_url, token="secret-token", cache=None, retries=0)
    with pytest.raises(mf.MihuError) as caught:
        client.sessions(CONVERSATION)
    assert caught.value.status_code == 302
    assert elsewhere.paths == []


def test_gzip_bodies_are_decoded_and_headers_are_sent(server_factory):
    import gzip

    seen: list[dict[str, str]] = []
    session = {"uuid": "00000000-0000-4000-8000-000000000001", "task_uuids": []}

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        seen.append(dict(headers))
        body = _body(1, 1, sessions=json.dumps(session))
        if "gzip" in headers.get("Accept-Encoding", ""):
            return (
                200,
                {"Content-Encoding": "gzip", "Content-Type": "application/json"},
                gzip.compress(body),
            )
        return 200, {"Content-Type": "application/json"}, body

    server = server_factory(answer)
    client = mf.MihuClient(server.base_url, token="tok", cache=None)
    df = client.sessions(CONVERSATION)
    assert list(df["uuid"]) == [session["uuid"]]
    assert seen[0]["Authorization"] == "Bearer tok"
    assert seen[0]["Accept"] == "application/json"
    assert seen[0]["User-Agent"].startswith("mihu_frames/")
    assert "gzip" in seen[0]["Accept-Encoding"]


def test_without_a_token_a_load_says_so_and_sends_nothing(server_factory, monkeypatch, tmp_path):
    monkeypatch.delenv("MIHU_API_TOKEN", raising=False)
    seen: list[dict[str, str]] = []

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        seen.append(dict(headers))
        return 200, {}, _body(1, 0)

    server = server_factory(answer)
    cache = tmp_path / "c.sqlite"
    with mf.MihuClient(server.base_url, token="tok", cache=cache) as client:
        client.sessions(CONVERSATION)
    seen.clear()
    with mf.MihuClient(server.base_url, token=None, cache=cache) as client:
        assert repr(client).endswith("token=none)")
        with pytest.raises(mf.AuthenticationError, match=r"no API token.*MIHU_API_TOKEN"):
            client.sessions(CONVERSATION)  # even though the cache could answer
        assert client.sessions(CONVERSATION, offline=True).empty
    assert seen == []


def test_an_expired_page_answered_by_a_redirect_is_an_error_not_a_hang(server_factory, tmp_path):
    elsewhere = server_factory(lambda path, headers: (200, {}, b"{}"))
    state = {"redirect": False}

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        if state["redirect"]:
            return 302, {"Location": f"{elsewhere.base_url}/x"}, b""
        return 200, {"Content-Type": "application/json"}, _body(1, 0)

    server = server_factory(answer)
    cache = tmp_path / "c.sqlite"
    options = {"token": "secret-token", "cache": cache, "retries": 0, "expire_after": 1}
    with mf.MihuClient(server.base_url, **options) as client:
        client.sessions(CONVERSATION)
    time.sleep(1.2)  # the page expires: requests-cache asks again, and gets a redirect
    state["redirect"] = True
    with mf.MihuClient(server.base_url, **options) as client:
        with pytest.raises(mf.MihuError) as caught:
            client.sessions(CONVERSATION)
        client.flush_cache()  # returns: the writer is not stuck
    assert caught.value.status_code == 302
    assert elsewhere.paths == []


# --------------------------------------------------------------------------- edges of a request


def test_a_retry_after_that_is_no_number_or_date_backs_off_and_ends_as_a_rate_limit_error(
    server_factory,
):
    server = server_factory(
        lambda path, headers: (429, {"Retry-After": "soon"}, b'{"message": "slow down"}')
    )
    client = mf.MihuClient(server.base_url, token="tok", cache=None, retries=2, backoff_factor=0.01)
    with pytest.raises(
        mf.RateLimitError, match=r"slow down \(still rate limited after 2 retries\)"
    ):
        client.sessions(CONVERSATION, progress=False)
    assert len(server.paths) == 3


def test_a_body_that_is_not_the_gzip_it_claims_is_a_format_error_not_a_connection_error(
    server_factory,
):
    server = server_factory(
        lambda path, headers: (200, {"Content-Encoding": "gzip"}, b"this is not gzip at all")
    )
    client = mf.MihuClient(server.base_url, token="tok", cache=None, retries=2)
    with pytest.raises(mf.ResponseFormatError, match="could not be decompressed") as caught:
        client.sessions(CONVERSATION, progress=False)
    assert caught.value.page == 1
    assert len(server.paths) == 1  # not retried: the same bytes would come again


def test_the_deadline_holds_while_backing_off_from_a_dropped_connection():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def drop() -> None:  # accept, read the request, close without an answer
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            accepted.append(conn)
            conn.close()

    import threading

    threading.Thread(target=drop, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(mf.DeadlineExceededError):
            mf.load_sessions(
                CONVERSATION,
                base_url=url,
                token="tok",
                cache=None,
                progress=False,
                backoff_factor=8,  # 8 s and more between tries, past the deadline
                deadline=1.0,
            )
    finally:
        listener.close()
    assert time.monotonic() - started < 2.0
    assert len(accepted) <= 2


def test_loads_share_one_watchdog_thread():
    import threading

    from mihu_frames.simulator import Simulator

    with Simulator(sizes=[30, 30]) as sim:
        for _ in range(8):
            df = mf.load_sessions(
                sim.conversation_uuids,
                base_url=sim.base_url,
                token=sim.token,
                cache=None,
                progress=False,
            )
            assert len(df) == 60
    names = [thread.name for thread in threading.enumerate()]
    assert names.count("mihu-watchdog") == 1, names


def test_a_loopback_server_is_never_reached_through_a_proxy(sim, monkeypatch):
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(4)
    proxy.settimeout(0.2)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.getsockname()[1]}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        conversation = sim.conversation_uuids[2]
        df = mf.load_sessions(
            conversation,
            base_url=sim.base_url,
            token=sim.token,
            cache=None,
            progress=False,
            retries=0,
        )
        assert_matches_truth(df, sim.ground_truth(conversation))
        with pytest.raises(TimeoutError):
            proxy.accept()  # nothing, and so no token, went to the proxy
    finally:
        proxy.close()


def test_a_proxy_managers_own_connection_classes_are_kept(sim):
    """A SOCKS proxy's pools make connections that take ``_socks_options``: bounding their
    wait for headers must keep those classes (a plain connection class raises TypeError)."""
    import urllib3
    from urllib3.connection import HTTPConnection
    from urllib3.connectionpool import HTTPConnectionPool

    from mihu_frames.transport.connections import bounded

    made: list[str] = []

    class TunnelConnection(HTTPConnection):
        def __init__(self, *args: Any, _socks_options: dict[str, str], **kw: Any) -> None:
            made.append(_socks_options["via"])
            super().__init__(*args, **kw)

    class TunnelPool(HTTPConnectionPool):
        ConnectionCls = TunnelConnection

    manager = urllib3.PoolManager()
    manager.pool_classes_by_scheme = {"http": TunnelPool}
    manager.connection_pool_kw["_socks_options"] = {"via": "tunnel"}
    reply = bounded(manager).request(
        "GET", f"{sim.base_url}/api/v1/conversations/{sim.conversation_uuids[1]}/sessions"
    )
    assert reply.status == 401  # no token sent here: the point is the connection class
    assert made == ["tunnel"]


def test_a_forked_child_has_its_own_connections(sim):
    """Parent and child load on one client at once: each gets its own rows (sharing the
    parent's pooled sockets, each read answers meant for the other)."""
    import os

    conversations = sim.conversation_uuids[4:7]
    truth = {c: [s["uuid"] for s in sim.ground_truth(c)] for c in conversations}

    def right(df: pd.DataFrame) -> bool:
        return all(
            list(df.loc[df["conversation_uuid"] == c, "uuid"]) == uuids
            for c, uuids in truth.items()
        ) and len(df) == sum(map(len, truth.values()))

    client = mf.MihuClient(sim.base_url, token=sim.token, cache=None, max_workers=4, retries=0)
    assert right(client.sessions(conversations, progress=False, per_page=10))
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                df = client.sessions(conversations, progress=False, per_page=10)
                os._exit(0 if right(df) else 3)
            except BaseException:
                os._exit(2)
        df = client.sessions(conversations, progress=False, per_page=10)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert right(df)
    client.close()


# --------------------------------------------------------------------------- a 404's address


def test_a_404_names_the_url_it_tried_and_when_the_address_looks_wrong(sim, server_factory):
    token = "secret-token-0123456789"
    path = f"/api/v1/conversations/{CONVERSATION}/sessions"
    # The API's own answer for a conversation it does not have: the conversation is missing.
    with pytest.raises(mf.NotFoundError) as missing:
        mf.load_sessions(CONVERSATION, base_url=sim.base_url, token=sim.token, cache=None)
    assert missing.value.url == sim.base_url + path
    assert str(missing.value) == (
        f"conversation {CONVERSATION}, page 1: HTTP 404: Conversation not found. "
        f"(GET {sim.base_url}{path})"
    )
    # No API route there: a web server's page, or the framework's bare {"message": ...}.
    answers = {
        "nginx": (b"<html><head><title>404 Not Found</title></head></html>", "text/html"),
        "laravel": (b'{"message":"The route api/v2 could not be found."}', "application/json"),
    }
    for name, (body, kind) in answers.items():
        server = server_factory(
            lambda p, h, body=body, kind=kind: (404, {"Content-Type": kind}, body)
        )
        with pytest.raises(mf.NotFoundError) as caught:
            mf.load_sessions(CONVERSATION, base_url=server.base_url, token=token, cache=None)
        text = str(caught.value)
        assert caught.value.url == server.base_url + path, name
        assert text.startswith(
            f"conversation {CONVERSATION}, page 1: HTTP 404: no API route at "
            f"{server.base_url}{path} ("
        ), text
        assert "the address looks wrong, rather than the conversation missing" in text
        assert "base_url= or subdomain=" in text and token not in text + repr(caught.value)
    # The simulator answers a route it does not have with the API's envelope ("Not found."):
    # a base URL with a path of its own (…/api/v2) is what says the address looks wrong.
    with pytest.raises(mf.NotFoundError) as wrong:
        mf.load_sessions(
            CONVERSATION, base_url=sim.base_url + "/api/v2", token=sim.token, cache=None
        )
    text = str(wrong.value)
    assert wrong.value.url == f"{sim.base_url}/api/v2{path}"
    assert text.startswith(
        f"conversation {CONVERSATION}, page 1: HTTP 404: Not found. (GET {sim.base_url}/api/v2"
        f"{path}). The base URL has a path of its own, '/api/v2'"
    ), text
    assert "if the conversation exists, the address looks wrong" in text
