"""Typed errors, bad arguments, retries under faults, on_error, drift."""

from __future__ import annotations

import sqlite3
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames.transport import Where

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"conversations": "not-a-uuid"}, "not a conversation UUID"),
        ({"conversations": ["../../admin"]}, "not a conversation UUID"),
        ({"conversations": UNKNOWN + "/x"}, "not a conversation UUID"),
        ({"per_page": 500}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": True}, "per_page"),
        ({"status": "done"}, "status must be one of"),
        ({"status": []}, "status must not be an empty list"),
        ({"type": ["text", "fax"]}, "type must be one of"),
        ({"sort_by": "name"}, "sort_by"),
        ({"sort_dir": "up"}, "sort_dir"),
        ({"on_error": "ignore"}, "on_error"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_bad_arguments_raise_before_any_request(fresh_sim, make_client, args, match):
    client = make_client(fresh_sim)
    conversations = args.pop("conversations", fresh_sim.conversation_uuids)
    with pytest.raises(ValueError, match=match):
        client.sessions(conversations, **args)
    assert fresh_sim.request_count == 0


def test_bad_client_options(fresh_sim):
    for options in ({"max_workers": 0}, {"retries": -1}, {"timeout": 0}):
        with pytest.raises(ValueError):
            mf.MihuClient(fresh_sim.base_url, cache=None, **options)
    for expire in (float("inf"), 1e12, -1, timedelta(days=999_999_999), float("nan"), "1h"):
        with pytest.raises(ValueError, match="expire_after"):
            mf.MihuClient(fresh_sim.base_url, cache=None, expire_after=expire)
    for expire in (0, 3600, timedelta(days=365 * 999), None):
        mf.MihuClient(fresh_sim.base_url, cache=None, expire_after=expire).close()
    with pytest.raises(ValueError, match="refusing to send the API token over plain http"):
        mf.MihuClient("http://api.example.com", token="secret-token-123", cache=None)
    with pytest.raises(ValueError, match="base_url or subdomain"):
        mf.MihuClient("https://a.mihu.ai", subdomain="a", cache=None)
    with pytest.raises(ValueError):
        mf.MihuClient(subdomain="bad/sub", cache=None)
    with pytest.raises(ValueError, match="offline=True needs a cache"):
        mf.MihuClient(fresh_sim.base_url, cache=None).sessions(UNKNOWN, offline=True)
    # loopback names are fine over http, and any host over https
    mf.MihuClient("http://localhost:9", token="t", cache=None)
    mf.MihuClient("http://[::1]:9", token="t", cache=None)
    mf.MihuClient("https://acme.mihu.ai", token="t", cache=None)


def test_wrong_token_is_authentication_error(fresh_sim, cache_path):
    client = mf.MihuClient(fresh_sim.base_url, token="wrong-token-xyz", cache=cache_path)
    with pytest.raises(mf.AuthenticationError) as info:
        client.sessions(fresh_sim.conversation_uuids[1])
    assert info.value.status_code == 401
    assert info.value.conversation == fresh_sim.conversation_uuids[1]
    assert "Unauthenticated" in str(info.value)
    assert "wrong-token-xyz" not in str(info.value) + repr(info.value)


def test_unknown_conversation_is_not_found(fresh_sim, make_client):
    with pytest.raises(mf.NotFoundError) as info:
        make_client(fresh_sim).sessions(UNKNOWN)
    assert info.value.conversation == UNKNOWN and info.value.page == 1
    assert "Conversation not found" in str(info.value)


def test_server_422_is_validation_error_with_field_errors(fresh_sim, make_client):
    client = make_client(fresh_sim)
    conversation = fresh_sim.conversation_uuids[1]
    with pytest.raises(mf.ValidationError) as info:
        # per_page=500 never passes the client's own check: ask the transport directly
        url = f"{fresh_sim.base_url}/api/v1/conversations/{conversation}/sessions?per_page=500"
        client.transport.get(url, Where(conversation, 1))
    assert "per_page" in info.value.errors
    assert "per page" in str(info.value)


@pytest.mark.parametrize("kind", ["invalid_json", "bad_envelope", "html200"])
def test_body_that_is_not_the_envelope_raises_and_is_not_cached(
    fresh_sim, make_client, cache_path, kind
):
    client = make_client(fresh_sim)
    conversation = fresh_sim.conversation_uuids[2]
    fresh_sim.fail_next(kind, conversation=conversation, page=2)
    with pytest.raises(mf.ResponseFormatError) as info:
        client.sessions(conversation)
    assert info.value.conversation == conversation and info.value.page == 2
    # nothing of the failed listing is cached: not the bad page 2, nor page 1 (a listing is
    # only ever used whole)
    client.flush_cache()  # saved in the background, after the load
    assert _cached_responses(cache_path) == 0
    fresh_sim.reset_requests()
    df = client.sessions(conversation)
    assert_matches_truth(df, fresh_sim.ground_truth(conversation))
    assert [r.page for r in fresh_sim.requests] == [1, 2]
    client.flush_cache()
    assert _cached_responses(cache_path) == 2


def _cached_responses(path: Path) -> int:
    """Responses requests-cache holds in the file (its table is made with its first save)."""
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
        if "responses" not in tables:
            return 0
        return int(db.execute("select count(*) from responses").fetchone()[0])


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "drop"])
def test_transient_faults_are_retried_and_lose_nothing(fresh_sim, make_client, kind):
    client = make_client(fresh_sim, cache=None)
    conversation = fresh_sim.conversation_uuids[3]
    fresh_sim.fail_next(kind, n=2, conversation=conversation, page=2)
    fresh_sim.reset_requests()
    df = client.sessions(conversation)
    assert_matches_truth(df, fresh_sim.ground_truth(conversation))
    assert df.attrs["mihu_frames"]["retries"] == 2
    assert fresh_sim.request_count == 3 + 2
    assert df.attrs["mihu_frames"]["requests"] == 5


def test_stall_longer_than_timeout_is_retried(fresh_sim, make_client):
    fresh_sim.stall_seconds = 1.5
    client = make_client(fresh_sim, cache=None, timeout=0.3)
    conversation = fresh_sim.conversation_uuids[2]
    fresh_sim.fail_next("stall", conversation=conversation, page=1)
    df = client.sessions(conversation)
    assert_matches_truth(df, fresh_sim.ground_truth(conversation))
    assert df.attrs["mihu_frames"]["retries"] == 1


@pytest.mark.parametrize(
    ("kind", "error"),
    [("429", mf.RateLimitError), ("503", mf.ServerError), ("drop", mf.ServerError)],
)
def test_exhausted_retries_raise_typed_errors(fresh_sim, make_client, kind, error):
    client = make_client(fresh_sim, cache=None, retries=2)
    conversation = fresh_sim.conversation_uuids[2]
    fresh_sim.fail_next(kind, n=3, conversation=conversation, page=1)
    with pytest.raises(error) as info:
        client.sessions(conversation)
    assert info.value.conversation == conversation and info.value.page == 1


def test_on_error_warn_and_skip_load_the_rest(fresh_sim, make_client):
    client = make_client(fresh_sim, cache=None, retries=1)
    bad, good = fresh_sim.conversation_uuids[2], fresh_sim.conversation_uuids[3]
    fresh_sim.fail_next("500", n=2, conversation=bad, page=2)
    with pytest.warns(RuntimeWarning) as caught:
        df = client.sessions([bad, good, UNKNOWN], on_error="warn")
    assert sorted(bad in str(w.message) or UNKNOWN in str(w.message) for w in caught) == [
        True,
        True,
    ]
    assert_matches_truth(df, fresh_sim.ground_truth(good))  # nothing half-loaded from `bad`
    errors = df.attrs["mihu_frames"]["errors"]
    assert {(e["conversation"], e["error"]) for e in errors} == {
        (bad, "ServerError"),
        (UNKNOWN, "NotFoundError"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = client.sessions([UNKNOWN, good], on_error="skip")
    assert len(df) == 230 and len(df.attrs["mihu_frames"]["errors"]) == 1
    with pytest.raises(mf.NotFoundError):
        client.sessions([good, UNKNOWN])


def test_drift_during_load_loses_and_duplicates_nothing(fresh_sim, make_client):
    conversation = fresh_sim.conversation_uuids[3]
    before = {s["uuid"] for s in fresh_sim.ground_truth(conversation)}
    fresh_sim.drift = 40  # 40 new and 40 touched sessions before every request
    client = make_client(fresh_sim, cache=None, max_workers=2)
    df = client.sessions(conversation, per_page=50)
    fresh_sim.drift = 0
    assert df["uuid"].is_unique
    assert before <= set(df["uuid"])
    after = {s["uuid"]: s for s in fresh_sim.ground_truth(conversation)}
    assert set(df["uuid"]) <= set(after)
    assert len(df) > len(before)  # last_page grew while reading, and the new pages were read


def test_drift_under_unstable_sort_is_deduplicated(fresh_sim, make_client):
    conversation = fresh_sim.conversation_uuids[3]
    fresh_sim.drift = 5
    df = make_client(fresh_sim, cache=None, max_workers=1).sessions(
        conversation, sort_by="updated_at", sort_dir="desc", per_page=20
    )
    fresh_sim.drift = 0
    assert df["uuid"].is_unique


def test_on_error_warning_points_at_the_callers_line(fresh_sim, make_client):
    client = make_client(fresh_sim, cache=None)
    with pytest.warns(RuntimeWarning) as caught:
        client.sessions([UNKNOWN, fresh_sim.conversation_uuids[1]], on_error="warn")
    assert caught[0].filename == __file__


def test_listing_filters_take_a_value_or_a_list_checked_before_any_request(fresh_sim, make_client):
    client = make_client(fresh_sim, cache=None)
    for bad in ([], [""], ["web", 3], [" web"], b"web", 7):
        with pytest.raises(ValueError, match=r"^channel must "):
            client.conversations(channel=bad)
    with pytest.raises(ValueError, match="not a conversation UUID"):
        client.conversations(agent_uuid=[UNKNOWN, "nope"])
    assert fresh_sim.request_count == 0
    # Several values: one listing per value, their union, each conversation once.
    every = client.conversations()
    both = client.conversations(status=["open", "closed", "open"], progress=False)
    assert sorted(both["uuid"]) == sorted(every["uuid"]) and both["uuid"].is_unique
    assert both.attrs["mihu_frames"]["filters"] == {"status": ["open", "closed"]}
    assert fresh_sim.request_count == 1 + 2
