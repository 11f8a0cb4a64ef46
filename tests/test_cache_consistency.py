"""Stored loads against the pages beside them: two clients on one cache file, and stores that
roll back (issue 18, items 2 and 6a)."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from typing import Any

import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames.cachefile import CacheFile
from mihu_frames.schema import empty_table


@pytest.mark.parametrize("refreshed_by_b", ["the same load", "another load"])
def test_a_load_built_from_a_listing_another_client_replaced_is_never_served(
    fresh_sim, make_client, monkeypatch, caplog, refreshed_by_b
):
    """A builds a load from cached listing L1; B (same file) fetches the conversation anew
    and saves L2; only then does A's writer get to store A's result. It must not be stored:
    a later load would be answered with L1's 150 rows while the cache holds L2's 157."""
    c, d = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    a, b = make_client(fresh_sim), make_client(fresh_sim)
    assert len(a.sessions([c, d])) == 380  # c's pages cached as listing L1 (no load of c alone)
    a.flush_cache()
    assert a.cache is not None
    held: list[tuple[Any, Any]] = []
    # A's run takes long enough that B's refresh is saved before A's result is handed over.
    monkeypatch.setattr(a.cache, "store_load", lambda *args, **kw: held.append((args, kw)))
    fresh_sim.reset_requests()
    built = a.sessions(c)
    assert len(built) == 150 and fresh_sim.request_count == 0  # from L1's pages
    monkeypatch.undo()
    (stored_later,) = held

    fresh_sim.add_sessions(c, 7)
    loaded_by_b, rows = ([c], 157) if refreshed_by_b == "the same load" else ([c, d], 387)
    assert len(b.sessions(loaded_by_b, refresh=True)) == rows  # c's listing L2 saved
    b.flush_cache()

    with caplog.at_level(logging.DEBUG, logger="mihu_frames"):
        args, kwargs = stored_later
        a.cache.store_load(*args, **kwargs)  # A's writer stores its L1 result now
        a.flush_cache()

    fresh_sim.reset_requests()
    third = make_client(fresh_sim).sessions(c)
    assert fresh_sim.request_count == 0  # from the cache: L2's pages or B's stored load
    assert len(third) == 157
    assert_matches_truth(third, fresh_sim.ground_truth(c))
    assert "not storing the load" in caplog.text  # why, at DEBUG


def test_a_store_rolled_back_keeps_every_file_its_rows_point_to(tmp_path, caplog):
    """A store replaces the loads it makes stale, then fails: after the rollback their rows
    are back, and so must their files be (unlinked before the commit, they were lost)."""
    path = tmp_path / "c.sqlite"
    cache = CacheFile(path, expire_after=None, timeout=5)
    conversation = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    table = empty_table()
    cache.store_load(
        "a", table, conversations=[conversation], fresh=[], listings={}, meta={"pages": 1}
    )
    cache.flush()
    (kept,) = cache.stored_load_files()
    with closing(sqlite3.connect(path)) as db, db:  # a store that fails after its deletes
        db.execute(
            "create trigger refuse_b before insert on mihu_frames_loads when new.key = 'b' "
            "begin select raise(abort, 'disk full'); end"
        )
    with caplog.at_level(logging.WARNING, logger="mihu_frames"):
        # b fetched the conversation anew: a is stale and goes in b's transaction
        cache.store_load(
            "b",
            table,
            conversations=[conversation],
            fresh=[conversation],
            listings={},
            meta={"pages": 1},
        )
        cache.flush()
    assert "could not store the load result" in caplog.text and "disk full" in caplog.text
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("select key, file from mihu_frames_loads").fetchall()
    assert rows == [("a", kept.name)]  # rolled back: a's row is there again
    assert cache.stored_load_files() == [kept]  # and so is its file
    stored = cache.stored_load("a")
    assert stored is not None and stored[0].equals(table)
    cache.close()


def test_a_load_whose_listings_all_stand_is_stored_and_served(fresh_sim, make_client):
    """The check lets through what nobody replaced: fresh listings this load saved, cached
    ones it read, together in one load."""
    c, d = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    client = make_client(fresh_sim)
    client.sessions(c)  # c's listing cached
    both = client.sessions([c, d])  # c from the cache, d fetched and saved
    fresh_sim.reset_requests()
    with mf.MihuClient(fresh_sim.base_url, token=fresh_sim.token, cache=client.cache_path) as new:
        again = new.sessions([c, d])
        assert new.cache is not None and len(new.cache.stored_load_files()) == 2
    assert fresh_sim.request_count == 0
    assert again.equals(both) and len(again) == 380
