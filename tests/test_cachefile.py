"""Stored whole-load results: never staler than the page cache they were built from."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest

import mihu_frames as mf
from mihu_frames.cachefile import ORPHAN_AGE, CacheFile
from mihu_frames.options import LoadOptions
from mihu_frames.runner import Plan


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
    cache.store_load("a", empty_table(), conversations=many[:2], fresh=[], meta=meta)
    # b fetched 1,500 conversations anew (more than SQLite's expression-depth limit of 1,000
    # if each were its own "or"): a, which shares two of them, is stale and dropped
    cache.store_load("b", empty_table(), conversations=many, fresh=many, meta=meta)
    assert cache.stored_load("a") is None and cache.stored_load("b") is not None
    cache.store_load("a", empty_table(), conversations=many[:2], fresh=[], meta=meta)
    cache.invalidate(many[1:])
    assert cache.stored_load("a") is None and cache.stored_load("b") is None
    cache.close()
