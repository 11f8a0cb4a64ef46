"""The cache file: page keys, consistent listings, stored loads, background writes, forks."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import requests

import mihu_frames as mf
from mihu_frames.cachefile import (
    ORPHAN_AGE,
    CachedListing,
    CacheFile,
    Database,
    ListingIndex,
    LoadStore,
    PageStore,
    PageToSave,
    Writer,
    page_key,
    url_key,
)
from mihu_frames.options import LoadOptions
from mihu_frames.runner import Plan, Query


def _stored_loads(client) -> int:
    client.flush_cache()  # the result is written on a background thread
    with closing(sqlite3.connect(client.cache_path)) as db:
        return db.execute("select count(*) from mihu_frames_loads").fetchone()[0]


def test_identical_reload_is_one_read_and_equal(fresh_sim, make_client):
    client = make_client(fresh_sim)
    first = client.sessions(fresh_sim.conversation_uuids[1:])
    assert _stored_loads(client) == 1
    fresh_sim.reset_requests()
    second = client.sessions(fresh_sim.conversation_uuids[1:])
    assert fresh_sim.request_count == 0
    pd.testing.assert_frame_equal(first, second)
    assert second.attrs["mihu_frames"]["cache_hits"] == first.attrs["mihu_frames"]["pages"] == 6


def test_expired_pages_expire_the_stored_load(fresh_sim, make_client):
    client = make_client(fresh_sim, expire_after=1)
    conversation = fresh_sim.conversation_uuids[2]
    client.sessions(conversation)
    fresh_sim.touch_sessions(conversation, 3)
    time.sleep(1.2)
    fresh_sim.reset_requests()
    again = client.sessions(conversation)
    assert fresh_sim.request_count == 2
    truth = {s["uuid"]: s["updated_at"] for s in fresh_sim.ground_truth(conversation)}
    got = dict(zip(again["uuid"], again["updated_at"], strict=True))
    assert all(got[u] == pd.Timestamp(t).tz_convert("UTC") for u, t in truth.items())
    # offline accepts what is stored even when expired
    time.sleep(1.1)
    fresh_sim.reset_requests()
    assert len(client.sessions(conversation, offline=True)) == 150
    assert fresh_sim.request_count == 0


def test_refresh_of_one_conversation_invalidates_loads_that_include_it(fresh_sim, make_client):
    client = make_client(fresh_sim)
    a, b = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    both = client.sessions([a, b])
    new = fresh_sim.add_sessions(a, 2)
    refreshed = client.sessions(a, refresh=True)
    assert set(new) <= set(refreshed["uuid"])
    fresh_sim.reset_requests()
    again = client.sessions([a, b])
    assert set(new) <= set(again["uuid"]) and len(again) == len(both) + 2
    assert fresh_sim.request_count == 0  # every page came from the (refreshed) page cache


def test_failed_loads_are_not_stored(fresh_sim, make_client):
    client = make_client(fresh_sim, retries=0)
    fresh_sim.fail_next("500", conversation=fresh_sim.conversation_uuids[2])
    client.sessions(fresh_sim.conversation_uuids[1:3], on_error="skip")
    assert _stored_loads(client) == 0


def test_clear_cache_empties_pages_and_loads(fresh_sim, make_client):
    client = make_client(fresh_sim)
    client.sessions(fresh_sim.conversation_uuids[2])
    client.clear_cache()
    assert _stored_loads(client) == 0
    fresh_sim.reset_requests()
    client.sessions(fresh_sim.conversation_uuids[2])
    assert fresh_sim.request_count == 2


def test_key_depends_on_every_part_of_the_load(fresh_sim):
    c = fresh_sim.conversation_uuids
    plans = [
        Plan.build([c[1]], LoadOptions()),
        Plan.build([c[2]], LoadOptions()),
        Plan.build([c[1]], LoadOptions(status="all")),
        Plan.build([c[1]], LoadOptions(per_page=50)),
        Plan.build([c[1]], LoadOptions(sort_dir="desc")),
    ]
    x = mf.MihuClient("https://x", token="t", cache=None)
    y = mf.MihuClient("https://y", token="t", cache=None)
    keys = {x.load_key(p) for p in plans} | {y.load_key(plans[0])}
    assert len(keys) == len(plans) + 1


def test_a_partly_failed_refresh_drops_stored_loads_it_made_stale(fresh_sim, make_client):
    client = make_client(fresh_sim, retries=0)
    a, b = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    before = client.sessions([a, b])
    new = fresh_sim.add_sessions(a, 3)
    fresh_sim.fail_next("401", conversation=b)
    client.sessions([a, b], refresh=True, on_error="skip")  # a fetched anew, b failed
    fresh_sim.reset_requests()
    again = client.sessions([a, b])
    assert set(new) <= set(again["uuid"]) and len(again) == len(before) + 3
    assert fresh_sim.request_count == 0  # answered from the refreshed pages, not the old result


def _stored_files(client) -> list[Path]:
    client.flush_cache()
    return sorted(client.cache.folder.glob("*.arrow"))


def test_each_stored_load_is_one_file_removed_with_its_row(fresh_sim, make_client):
    client = make_client(fresh_sim)
    a, b = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    client.sessions(a)
    client.sessions([a, b])
    first = _stored_files(client)
    assert len(first) == 2 == _stored_loads(client)
    client.sessions(b, refresh=True)  # b fetched anew: the load holding b is stale
    files = _stored_files(client)
    assert len(files) == 2 == _stored_loads(client)  # the a-only load and the new b load
    assert first[0] in files or first[1] in files
    client.sessions(a, refresh=True)  # replaces the stored a-only load: a new file, old gone
    assert len(_stored_files(client)) == 2 and not set(first) & set(_stored_files(client))
    client.clear_cache()
    assert _stored_files(client) == [] and _stored_loads(client) == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "outside-name"])
def test_a_damaged_stored_file_is_dropped_and_the_pages_answer(
    fresh_sim, make_client, tmp_path, damage
):
    client = make_client(fresh_sim)
    conversation = fresh_sim.conversation_uuids[2]
    first = client.sessions(conversation)
    (path,) = _stored_files(client)
    outside = tmp_path / "outside.arrow"
    if damage == "garbage":
        path.write_bytes(os.urandom(path.stat().st_size))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "missing":
        path.unlink()
    else:  # an index row pointing outside the folder is refused, and nothing there is touched
        outside.write_bytes(path.read_bytes())
        with closing(sqlite3.connect(client.cache_path)) as db, db:
            db.execute("update mihu_frames_loads set file = ?", (f"../{outside.name}",))
    fresh_sim.reset_requests()
    again = client.sessions(conversation)
    pd.testing.assert_frame_equal(first, again)
    assert fresh_sim.request_count == 0  # every page came from requests-cache
    assert _stored_loads(client) == 1  # stored anew
    if damage == "outside-name":
        assert outside.exists()


def test_leftover_files_are_removed_once_an_hour_old(fresh_sim, make_client):
    client = make_client(fresh_sim)
    client.sessions(fresh_sim.conversation_uuids[1])
    client.flush_cache()
    folder = client.cache.folder
    old = [folder / ("0" * 64 + "-deadbeef.arrow"), folder / ".x-1.arrow.tmp"]
    young = folder / ("1" * 64 + "-deadbeef.arrow")
    mine = folder / "notes.txt"
    for path in [*old, young, mine]:
        path.write_bytes(b"left by a crash")
    stamp = time.time() - ORPHAN_AGE - 60
    for path in old:
        os.utime(path, (stamp, stamp))
    client.sessions(fresh_sim.conversation_uuids[2])  # the next store cleans up
    client.flush_cache()
    assert not any(p.exists() for p in old)
    assert young.exists() and mine.exists()
    assert len(_stored_files(client)) == 3  # two loads + the young leftover


def test_a_stored_load_index_from_an_older_version_is_replaced(fresh_sim, make_client, cache_path):
    cache_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(cache_path)) as db, db:
        db.execute(
            "create table mihu_frames_loads (key text primary key, expires real, "
            "conversations text not null, meta text not null, body blob not null)"
        )
        db.execute("insert into mihu_frames_loads values ('k', null, 'c', '{}', x'00')")
    client = make_client(fresh_sim)
    df = client.sessions(fresh_sim.conversation_uuids[2])
    assert len(df) == 150 and _stored_loads(client) == 1


def test_invalidation_works_for_thousands_of_conversations(tmp_path):
    from mihu_frames.schema import empty_table

    cache = CacheFile(tmp_path / "c.sqlite", expire_after=None, timeout=5)
    many = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(1500)]
    meta = {"pages": 1}
    cache.store_load("a", empty_table(), conversations=many[:2], fresh=[], listings={}, meta=meta)
    # b fetched 1,500 conversations anew (more than SQLite's expression-depth limit of 1,000
    # if each were its own "or"): a, which shares two of them, is stale and dropped
    cache.store_load("b", empty_table(), conversations=many, fresh=many, listings={}, meta=meta)
    assert cache.stored_load("a") is None and cache.stored_load("b") is not None
    cache.store_load("a", empty_table(), conversations=many[:2], fresh=[], listings={}, meta=meta)
    cache.invalidate(many[1:])
    assert cache.stored_load("a") is None and cache.stored_load("b") is None
    cache.close()


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
    query = Query(
        index=0,
        conversation=CONVERSATION,
        status=params.get("status"),
        type=params.get("type"),
        filters=(),
    )
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


def test_background_writes_never_recreate_a_removed_cache_file(fresh_sim, cache_path):
    client = mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path)
    hold = threading.Event()
    cache = client.cache
    assert cache is not None
    save = cache.save_pages

    def save_behind_a_held_job(*args: Any) -> None:  # the load's writes wait for `hold`
        cache.writer.submit(hold.wait)
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


# ---------------------------------------------------------------------- review fixes


def _writers_lock_is_free(cache_path: Path) -> bool:
    """Whether another process could take the writers' lock now (a fresh descriptor, as a
    second process would have)."""
    import fcntl

    fd = os.open(Path(f"{cache_path}.loads") / ".writing", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_load_after_close_reopens_the_cache_and_never_leaks_its_lock(fresh_sim, cache_path):
    conversation = fresh_sim.conversation_uuids[2]
    client = mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path)
    first = client.sessions(conversation)
    client.close()  # its writes are still pending here
    fresh_sim.reset_requests()
    again = client.sessions(conversation)  # the stored load, read after close
    assert fresh_sim.request_count == 0
    pd.testing.assert_frame_equal(first, again)
    new = fresh_sim.add_sessions(conversation, 4)
    refreshed = client.sessions(conversation, refresh=True)  # saves pages and a stored load
    assert set(new) <= set(refreshed["uuid"])
    client.close()
    client.flush_cache()
    assert _writers_lock_is_free(cache_path)
    fresh_sim.reset_requests()
    with mf.MihuClient(
        fresh_sim.base_url, token=fresh_sim.token, cache=cache_path, timeout=2
    ) as other:
        seen = other.sessions(conversation)
    assert fresh_sim.request_count == 0 and len(seen) == 154
    assert _writers_lock_is_free(cache_path)


def test_fresh_pages_saved_by_a_sync_drop_the_stored_loads_holding_them(
    fresh_sim, make_client, tmp_path
):
    client = make_client(fresh_sim)
    conversation = fresh_sim.conversation_uuids[2]
    other = fresh_sim.conversation_uuids[3]
    assert len(client.sessions(conversation)) == 150
    assert len(client.sessions(other)) == 230
    new = fresh_sim.add_sessions(conversation, 7)
    # the sync runs the pages itself (no stored load of its own), and saves them fresh
    synced = mf.sync_snapshots(tmp_path / "root", conversation, client=client, progress=False)
    assert len(synced) == 157
    assert _stored_loads(client) == 1  # the load of `other` only
    fresh_sim.reset_requests()
    again = client.sessions(conversation)
    assert set(new) <= set(again["uuid"]) and len(again) == 157
    assert fresh_sim.request_count == 0  # from the pages the sync saved
    assert len(client.sessions(other)) == 230 and fresh_sim.request_count == 0


#: What a holder returns: what lets go (once), and whether the parent still waits in the lock.
Held = tuple[Callable[[], None], Callable[[], bool]]

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def _another_writer_holds(lock: Path) -> Callable[[], None]:
    """Another process takes the writers' lock ``lock`` and keeps it until the returned
    function is called (it kills that process: a forked child shares our end of its pipes)."""
    import subprocess
    import sys

    other = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True
    )
    assert other.stdout is not None and other.stdout.readline() == "held\n"

    def release() -> None:
        other.kill()
        other.communicate(timeout=30)

    return release


def _once(*steps: Callable[[], object]) -> Callable[[], None]:
    """Run ``steps`` in order on the first call only."""
    done: list[bool] = []

    def run() -> None:
        if not done:
            done.append(True)
            for step in steps:
                step()

    return run


def _hold_the_page_store_opening(cache: CacheFile, cache_path: Path, monkeypatch: Any) -> Held:
    """A parent thread opens the page store (under its opening lock): building
    requests-cache's backend takes long (never inside SQLite at the fork: that is unsafe
    whatever the library does)."""
    import requests_cache

    parent, go = os.getpid(), threading.Event()

    class Slow(requests_cache.SQLiteCache):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if os.getpid() == parent:  # the child's is built at once
                go.wait(30)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(requests_cache, "SQLiteCache", Slow)
    cache.close()  # the next page read builds requests-cache's backend anew
    reader = threading.Thread(target=cache.read_page, args=(url_key("https://x.io/"),))
    reader.start()
    return _once(go.set, reader.join), reader.is_alive


def _hold_the_writer_handing_a_write(cache: CacheFile, cache_path: Path, monkeypatch: Any) -> Held:
    """A parent thread hands a write (under the writer's state lock) while another process's
    writer keeps the writers' lock."""
    release = _another_writer_holds(cache.folder / ".writing")
    handing = threading.Thread(target=cache.writer.submit, args=(time.sleep, 0))
    handing.start()
    return _once(release, handing.join), handing.is_alive


def _hold_the_load_store_writing(cache: CacheFile, cache_path: Path, monkeypatch: Any) -> Held:
    """The parent's writer runs a write that holds the stored-load index (and, with a write
    pending, the writers' lock)."""
    go = threading.Event()

    def write() -> None:
        with cache.loads.held():
            go.wait(30)

    cache.writer.submit(write)
    return _once(go.set, cache.flush), lambda: cache.writer.pending == 1


def _load_in_forked_child(client: mf.MihuClient, conversation: str, first: pd.DataFrame) -> int:
    """In the child: the stored load, pages from the page store, a refresh that saves pages;
    the exit code says what went wrong (a deadlock: killed by SIGALRM)."""
    import signal

    code = 1
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (pytest-timeout's handler)
        signal.alarm(20)
        stored = client.sessions(conversation)  # the stored load
        code = 2
        if stored.equals(first) and stored.attrs["mihu_frames"]["requests"] == 0:
            code = 3
            paged = client.sessions(conversation, per_page=50)  # the page store
            if len(paged) == 150 and paged.attrs["mihu_frames"]["requests"] == 0:
                code = 4
                fetched = client.sessions(conversation, refresh=True)  # saves pages
                client.flush_cache()
                code = 0 if len(fetched) == 150 else 5
    except BaseException:
        import traceback

        traceback.print_exc()
    return code


@pytest.mark.parametrize(
    "hold",
    [_hold_the_page_store_opening, _hold_the_writer_handing_a_write, _hold_the_load_store_writing],
)
def test_a_forked_child_gets_fresh_locks_and_loads_from_the_cache(
    fresh_sim, cache_path, monkeypatch, hold
):
    """The child is forked while a parent thread holds one of the cache's locks (opening the
    page store, handing a write, writing): it must not wait on them (no thread of the parent
    runs in the child to let go of them), nor on the parent's pending write."""
    conversation = fresh_sim.conversation_uuids[2]
    client = mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path, timeout=10)
    client.sessions(conversation, per_page=50)  # pages the child reads from the page store
    first = client.sessions(conversation)  # (its fresh pages drop the per_page=50 result)
    client.flush_cache()
    cache = client.cache
    assert cache is not None
    release, holding = hold(cache, cache_path, monkeypatch)
    time.sleep(0.5)  # the holding thread is waiting inside the lock by now (up to 30 s)
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(_load_in_forked_child(client, conversation, first))
        assert holding()  # it was still waiting at the fork
        release()
        deadline = time.monotonic() + 40
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung on the cache")
            time.sleep(0.05)
    finally:
        release()
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's cache still works (and sees the pages the child saved)
    fresh_sim.reset_requests()
    assert len(client.sessions(conversation)) == 150 and fresh_sim.request_count == 0
    client.close()


def test_reads_never_wait_for_the_writes_this_file_is_handed_after_them(
    fresh_sim, cache_path, monkeypatch
):
    """While this file's own writer keeps the writers' lock (its saves keep coming, each slow),
    a page read does not wait for it, and a listing read waits only for the saves handed
    before it: holding the lock itself, this process has no other writer to wait for."""

    conversation = fresh_sim.conversation_uuids[2]
    client = mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path, timeout=1)
    cache = client.cache
    assert cache is not None
    saved: list[tuple[list[PageToSave], dict[str, str]]] = []
    save_pages = cache.save_pages

    def record(pages: Any, headers: Any) -> None:  # the real save, its arguments kept
        saved.append((list(pages), dict(headers)))
        save_pages(pages, headers)

    monkeypatch.setattr(cache, "save_pages", record)
    client.sessions(conversation)
    client.flush_cache()
    ((pages, headers),) = saved
    query = pages[0].query
    stop = threading.Event()

    def keep_saving() -> None:  # a save handed every 30 ms, each taking 100 ms (a slow disk)
        for _ in range(30):
            if stop.is_set():
                return
            cache.writer.submit(time.sleep, 0.1)
            record(pages, headers)
            time.sleep(0.03)

    saver = threading.Thread(target=keep_saving)
    saver.start()
    try:
        while cache.writer.pending < 2:
            time.sleep(0.005)
        began = time.monotonic()
        page = cache.read_page(pages[0].key)
        assert page is not None and page.listing == pages[0].listing
        assert time.monotonic() - began < 0.5  # not behind the queued saves
        listing = cache.listings([query])[query]  # waits for the saves handed before it
        assert listing.last_page == 2 and listing.listing == pages[0].listing
    finally:
        stop.set()
        saver.join()
    client.flush_cache()
    client.close()
    assert len(saved) > 3


def test_a_stored_load_is_served_without_opening_the_page_store(fresh_sim, cache_path, monkeypatch):
    """requests-cache's backend costs milliseconds to build: only pages need it."""
    import requests_cache

    conversation = fresh_sim.conversation_uuids[2]
    with mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path) as client:
        first = client.sessions(conversation)
    built: list[Any] = []

    class Counted(requests_cache.SQLiteCache):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(requests_cache, "SQLiteCache", Counted)
    fresh_sim.reset_requests()
    with mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=cache_path) as client:
        pd.testing.assert_frame_equal(client.sessions(conversation), first)
        assert built == [] and fresh_sim.request_count == 0
        pages = client.sessions(conversation, per_page=50)  # no stored load: pages
        assert len(pages) == 150 and built
    assert fresh_sim.request_count == 3


def test_the_default_expiry_is_declared_once_in_options():
    import mihu_frames.cachefile as cachefile
    from mihu_frames import options

    assert not hasattr(cachefile, "DEFAULT_EXPIRE_AFTER")
    assert options.DEFAULT_EXPIRE_AFTER.total_seconds() == 3600


# ---------------------------------------------------------------------- each part on its own

C1, C2 = CONVERSATION, "5e1c3b1a-7f0e-4c3b-9a7d-2f4e6a8b0c1d"


def _writer(tmp_path: Path, timeout: float = 5, idle: Any = None) -> Writer:
    """A writer for ``c.sqlite`` (the file itself is never touched by the writer)."""
    folder = tmp_path / "c.sqlite.loads"
    folder.mkdir()
    return Writer(tmp_path / "c.sqlite", folder / ".writing", timeout=timeout, idle=idle)


def test_the_writer_runs_writes_in_order_after_the_caller_under_the_writers_lock(tmp_path):
    idle: list[str] = []
    writer = _writer(tmp_path, idle=lambda: idle.append(threading.current_thread().name))
    gate, done = threading.Event(), []
    writer.submit(gate.wait)
    writer.submit(done.append, 1)
    writer.submit(done.append, 2)
    assert writer.pending == 3 and done == [] and idle == []  # the caller did not wait
    assert writer.holds_lock() and not _writers_lock_is_free(tmp_path / "c.sqlite")
    gate.set()
    writer.flush()
    assert done == [1, 2] and writer.pending == 0
    assert len(idle) == 1 and idle[0].startswith("mihu-cache-writer")  # once, on its thread
    assert not writer.holds_lock() and _writers_lock_is_free(tmp_path / "c.sqlite")
    writer.close()


def test_a_failed_write_is_logged_and_the_next_still_runs(tmp_path, caplog):
    writer = _writer(tmp_path)
    done: list[str] = []
    with caplog.at_level(logging.WARNING, logger="mihu_frames"):
        writer.submit(lambda: 1 / 0)
        writer.submit(done.append, "after")
        writer.flush()
    assert "a background write to" in caplog.text and "ZeroDivisionError" in caplog.text
    assert done == ["after"] and _writers_lock_is_free(tmp_path / "c.sqlite")
    writer.close()


def test_the_writer_waits_for_another_processs_writer_then_gives_up(tmp_path, caplog):
    writer = _writer(tmp_path, timeout=0.5)
    release = _another_writer_holds(writer.lock_path)
    done: list[int] = []
    try:
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="mihu_frames"):
            writer.submit(done.append, 1)  # cannot take the lock: dropped, said
        assert time.monotonic() - began >= 0.5 and writer.pending == 0
        assert "another writer holds it too long" in caplog.text
        with pytest.raises(mf.CacheLockedError, match="kept writing to the cache file"):
            writer.flush()  # the other process's writes are pending for too long
    finally:
        release()
    writer.flush()  # nothing pending anywhere now
    writer.submit(done.append, 2)
    writer.flush()
    assert done == [2]
    writer.close()


def test_close_does_not_wait_and_a_write_after_it_comes_after_the_pending_ones(tmp_path):
    writer = _writer(tmp_path)
    gate, done = threading.Event(), []
    writer.submit(gate.wait)
    writer.submit(done.append, 1)
    began = time.monotonic()
    writer.close()
    assert time.monotonic() - began < 0.5 and writer.pending == 2 and writer.holds_lock()
    threading.Timer(0.2, gate.set).start()
    writer.submit(done.append, 2)  # a new thread, once the closed one's writes are done
    writer.flush()
    assert done == [1, 2] and _writers_lock_is_free(tmp_path / "c.sqlite")
    writer.close()


def _page(listing: str, page: int = 1, last_page: int = 1, *, query: str = "q") -> PageToSave:
    url = f"https://x.io/api/v1/conversations/{C1}/sessions?page={page}&q={query}"
    headers = {"Date": "Sun, 06 Dec 2026 09:00:00 GMT", "Content-Type": "application/json"}
    body = f'{{"page": {page}, "listing": "{listing}"}}'.encode()
    return PageToSave(url_key(url), query, page, last_page, listing, url, "OK", headers, body)


def _database(tmp_path: Path) -> Database:
    path = tmp_path / "c.sqlite"
    path.touch()
    database = Database(path, timeout=5)
    with database.connect() as db:
        ListingIndex.create(db)
        LoadStore.create(db)
    return database


def test_the_page_store_saves_pages_and_more_in_one_transaction(tmp_path):
    store = PageStore(_database(tmp_path))
    pages = [_page("L1", 1, 2), _page("L1", 2, 2)]
    held = threading.Lock()

    def also(db: sqlite3.Connection) -> tuple[int, bool]:  # sees the pages, uncommitted
        return db.execute("select count(*) from responses").fetchone()[0], held.locked()

    assert store.save(pages, {"Accept": "application/json"}, None, holding=held, also=also) == (
        2,
        True,
    )
    page = store.read(pages[1].key)
    assert page is not None and page.body == pages[1].body and page.listing == "L1"
    assert page.served_at == datetime(2026, 12, 6, 9, tzinfo=timezone.utc)
    assert page.expires is None
    other = [_page("L2", query="r")]

    def fails(db: sqlite3.Connection) -> None:
        db.execute("insert into nowhere values (1)")

    with pytest.raises(sqlite3.Error, match="nowhere"):
        store.save(other, {}, None, holding=contextlib.nullcontext(), also=fails)
    assert store.read(other[0].key) is None  # rolled back with it
    store.delete([pages[0].key])
    assert store.read(pages[0].key) is None and store.read(pages[1].key) is not None
    store.clear()
    assert store.read(pages[1].key) is None
    store.close_saver()
    store.close()


def test_the_listing_index_answers_whole_listings_only(tmp_path):
    database = _database(tmp_path)
    index = ListingIndex(database)
    q1, q2 = _page("L1", 1, 2), _page("L1", 2, 2)
    r1 = _page("M", 1, 3, query="r")  # pages 2 and 3 missing
    with database.connect() as db:
        db.execute("begin immediate")
        ListingIndex.add(db, [q1, q2], 100.0)
        ListingIndex.add(db, [r1], None)
        db.execute("commit")
    got = index.complete(["q", "r", "s"])
    assert got == {"q": CachedListing("L1", 2, {1: q1.key, 2: q2.key}, 100.0)}
    assert got["q"].expired()
    with database.connect() as db:
        assert ListingIndex.changed(db, {"q": "L1"}) is None
        assert "gone from the page index" in str(ListingIndex.changed(db, {"s": "L1"}))
        db.execute("begin immediate")  # a new listing of q: the old one goes, whole or not
        ListingIndex.add(db, [_page("L2", 1, 2)], None)
        db.execute("commit")
        assert index.complete(["q"]) == {}
        assert "another listing of query q" in str(ListingIndex.changed(db, {"q": "L1"}))
        assert ListingIndex.changed(db, {"q": "L2"}) is None
    index.remove([q1.key])  # the same key, now L2's page 1
    with database.connect() as db:
        assert "gone from the page index" in str(ListingIndex.changed(db, {"q": "L2"}))
        ListingIndex.clear(db)
    assert index.complete(["q", "r"]) == {}


def test_the_load_store_removes_a_file_only_once_its_rows_deletion_committed(tmp_path):
    database = _database(tmp_path)
    store = LoadStore(database, tmp_path / "c.sqlite.loads")
    table = pa.table({"x": [1, 2]})
    store.write(
        "a",
        table,
        expires=None,
        conversations=[C1],
        fresh=[],
        meta={"pages": 1},
        refuse=lambda db: None,
    )
    got = store.read("a")
    assert got is not None and got[0].equals(table) and got[1] == {"pages": 1}
    (file,) = store.files()
    with store.held(), database.connect() as db:
        db.execute("begin immediate")
        assert store.delete_holding(db, [C2, C1]) == [file.name]
        db.execute("rollback")
    assert store.files() == [file] and store.read("a") is not None  # row and file kept
    with store.held(), database.connect() as db:
        db.execute("begin immediate")
        names = store.delete_all(db)
        db.execute("commit")
    assert file.exists() and store.read("a") is None  # the caller unlinks, after its commit
    store.unlink(names)
    assert store.files() == []


def test_the_load_store_refuses_expires_and_replaces_loads(tmp_path, caplog):
    database = _database(tmp_path)
    store = LoadStore(database, tmp_path / "c.sqlite.loads")
    table = pa.table({"x": [1]})
    seen: list[bool] = []

    def refuse(db: sqlite3.Connection) -> str:
        seen.append(db.in_transaction)  # asked in the inserting transaction
        return "the page index moved on"

    options: dict[str, Any] = {"conversations": [C1], "meta": {}}
    with caplog.at_level(logging.DEBUG, logger="mihu_frames"):
        store.write("b", table, expires=None, fresh=[], refuse=refuse, **options)
    assert seen == [True] and store.read("b") is None and store.files() == []
    assert "not storing the load" in caplog.text and "moved on" in caplog.text
    store.write("c", table, expires=time.time() - 1, fresh=[], refuse=lambda db: None, **options)
    assert store.read("c") is None and store.read("c", offline=True) is not None
    store.write("d", table, expires=None, fresh=[], refuse=lambda db: None, **options)
    assert store.read("c", offline=True) is None  # an expired one goes with the next store
    store.write("e", table, expires=None, fresh=[C1], refuse=lambda db: None, **options)
    assert store.read("d") is None and store.read("e") is not None  # d held C1, fetched anew
    store.invalidate([C2, C1])
    assert store.read("e") is None and store.files() == []
