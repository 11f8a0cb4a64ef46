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
