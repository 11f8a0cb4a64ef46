"""The network path: urllib3 pool, cache keys shared with requests-cache, hints, redirects."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest
import requests

import mihu_frames as mf
from mihu_frames.cachefile import page_key, url_key
from mihu_frames.decoding import paginator_hint
from mihu_frames.options import LoadOptions
from mihu_frames.runner import Plan, Query

CONVERSATION = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8765", "https://ACME.mihu.ai", "https://acme.mihu.ai/", "https://x.io/api/"],
)
@pytest.mark.parametrize(
    "params",
    [
        {"page": 1, "per_page": 100, "sort_by": "created_at", "sort_dir": "asc"},
        {
            "page": 12,
            "per_page": 7,
            "sort_by": "updated_at",
            "sort_dir": "desc",
            "status": "active",
        },
        {"page": 3, "per_page": 100, "sort_by": "started_at", "sort_dir": "asc", "type": "voice"},
    ],
)
def test_page_url_and_key_are_what_requests_prepares(base_url, params):
    client = mf.MihuClient(base_url, cache=None)
    options = {k: params[k] for k in ("per_page", "sort_by", "sort_dir")}
    plan = Plan.build([CONVERSATION], LoadOptions(**options))
    query = Query(0, CONVERSATION, params.get("status"), params.get("type"))
    url = client.runner.page_url(query, params["page"], plan)
    path = f"{base_url.rstrip('/')}/api/v1/conversations/{CONVERSATION}/sessions"
    prepared = requests.Request("GET", path, params=params).prepare()
    assert url == prepared.url
    # a CachedSession with page_key as its key_fn finds the pages a load saved
    assert url_key(url) == page_key(prepared)
    assert page_key(requests.Request("GET", url).prepare()) == url_key(url)


def test_pages_fetched_on_the_pool_are_served_by_requests_cache(fresh_sim, make_client):
    client = make_client(fresh_sim)
    a, b = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    both = client.sessions([a, b])
    fresh_sim.reset_requests()
    # another plan, so no stored load matches: every page comes from requests-cache
    alone = client.sessions(b, status=None, per_page=100)
    again = client.sessions(a)
    assert fresh_sim.request_count == 0
    assert alone.attrs["mihu_frames"]["cache_hits"] == 3
    expected = both[both["conversation_uuid"] == b].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        alone.drop(columns="fetched_at"), expected.drop(columns="fetched_at")
    )
    assert len(again) == 150
    client.close()
    client.flush_cache()  # pages are saved in the background, after the frame is built
    with closing(sqlite3.connect(client.cache_path)) as db:
        assert db.execute("select count(*) from responses").fetchone()[0] == 5


def test_a_new_client_on_the_file_sees_the_load_another_just_closed(fresh_sim, cache_path):
    conversations = fresh_sim.conversation_uuids[1:]
    with mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path) as client:
        first = client.sessions(conversations)
    # close() does not wait for the stored-load write; the next reader of the file does
    fresh_sim.reset_requests()
    with mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path) as client:
        second = client.sessions(conversations)
    assert fresh_sim.request_count == 0
    pd.testing.assert_frame_equal(first, second)


def _body(last_page: int, total: int, per_page: int = 100, sessions: str = "") -> bytes:
    return (
        f'{{"success":true,"message":"ok","data":{{"current_page":1,"data":[{sessions}],'
        f'"last_page":{last_page},"per_page":{per_page},"total":{total}}}}}'
    ).encode()


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (_body(10, 1000), 10),
        (_body(1, 0), 1),
        (_body(3, 201), 3),
        (b'{"data": {"last_page" : 2 , "total": 150, "per_page": 100}}', 2),
        # a session's own field named like the paginator comes before the envelope's
        (_body(4, 400, sessions='{"uuid":"u","last_page":99,"total":1,"per_page":1}'), 4),
        (_body(4, 100), None),  # disagrees with total / per_page: wait for the decode
        (_body(2, 150, per_page=0), None),
        (b'{"data": {"last_page": 2}}', None),
        (b"not json", None),
        (b'{"data": {"last_page": "2", "total": 150, "per_page": 100}}', None),
        (b'{"data": {"last_page": 2.5, "total": 150, "per_page": 100}}', None),
    ],
)
def test_paginator_hint(body, hint):
    assert paginator_hint(body) == hint


class _Server:
    """A loopback server whose answers a test writes: (status, headers, body) per path."""

    def __init__(self, answer: Any) -> None:
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.paths.append(self.path)
                status, headers, body = answer(self.path, self.headers)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server_factory() -> Iterator[Any]:
    servers: list[_Server] = []

    def make(answer: Any) -> _Server:
        servers.append(_Server(answer))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


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


def test_background_writes_never_recreate_a_removed_cache_file(fresh_sim, cache_path):
    client = mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path)
    hold = threading.Event()
    cache = client.cache
    assert cache is not None
    save = cache.save_pages

    def save_behind_a_held_job(*args: Any) -> None:  # the load's writes wait for `hold`
        cache._submit(hold.wait)
        save(*args)

    cache.save_pages = save_behind_a_held_job  # type: ignore[method-assign]
    try:
        df = client.sessions(fresh_sim.conversation_uuids[2])
        client.close()
        for path in cache_path.parent.rglob("*"):
            if path.is_file():
                path.unlink()
    finally:
        hold.set()  # never leave the writer blocked, whatever happened
    client.flush_cache()
    assert len(df) == 150
    assert not cache_path.exists()
    assert not any(p.is_file() for p in cache_path.parent.rglob("*"))


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


def test_a_forked_child_gets_cache_writers_of_its_own(fresh_sim, cache_path):
    import multiprocessing

    conversation = fresh_sim.conversation_uuids[2]
    with mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path) as client:
        client.sessions(conversation)  # this process now has a writer for the file
        client.flush_cache()  # (forking during an SQLite write is unsafe whatever we do)
    child = multiprocessing.get_context("fork").Process(
        target=_load_in_child, args=(fresh_sim.base_url, fresh_sim.token, cache_path, conversation)
    )
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def test_a_client_used_across_a_fork_gets_a_writer_of_its_own(fresh_sim, cache_path):
    import multiprocessing

    conversation = fresh_sim.conversation_uuids[2]
    client = mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path)
    client.sessions(conversation)
    client.flush_cache()
    child = multiprocessing.get_context("fork").Process(
        target=_reload_in_child, args=(client, conversation)
    )
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    client.close()
    assert child.exitcode == 0


def _reload_in_child(client: mf.MihuClient, conversation: str) -> None:
    df = client.sessions(conversation, refresh=True)  # saves pages: needs a live writer
    client.flush_cache()
    assert len(df) == 150


def _load_in_child(base_url: str, token: str, cache: Any, conversation: str) -> None:
    with mf.MihuClient(base_url, token=token, cache=cache) as client:
        client.sessions(conversation, refresh=True)
        client.flush_cache()
