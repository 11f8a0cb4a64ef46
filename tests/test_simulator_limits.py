"""The simulator's rate limits: Laravel's fixed window and a bare token bucket, over real HTTP.

The limiters' arithmetic is checked exactly on a fake clock; over HTTP the counts are checked with
the tolerances a busy machine needs (a burst may cross a window boundary).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from mihu_frames.simulator import DATA_END, Simulator
from mihu_frames.simulator.faults import FixedWindow, TokenBucket, limit_key

LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining")


class FakeClock:
    """Elapsed seconds and a Unix time 1,000,000 s ahead of them, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_000_000.0 + self.now


@pytest.fixture
def server() -> Iterator[Simulator]:
    with Simulator(seed=4, sizes=(3, 30)) as sim:
        yield sim


def sessions_url(sim: Simulator, index: int = 1) -> str:
    return f"{sim.base_url}/api/v1/conversations/{sim.conversation_uuids[index]}/sessions"


def burst(
    sim: Simulator, n: int, token: str = "sim-token", **params: str
) -> list[requests.Response]:
    """``n`` requests one after the other on one keep-alive connection."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        return [session.get(sessions_url(sim), params=params, timeout=10) for _ in range(n)]


# --- the arithmetic, on a fake clock ------------------------------------------------------------
def test_fixed_window_counts_and_headers() -> None:
    clock = FakeClock()
    throttle = FixedWindow(monotonic=clock.monotonic, wall=clock.wall)
    verdicts = [throttle.hit("a", 3, 60.0) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, True]
    assert [dict(v.headers) for v in verdicts] == [
        {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": str(n)} for n in (2, 1, 0)
    ]
    clock.now = 20.25
    refused = throttle.hit("a", 3, 60.0)
    assert not refused.allowed
    assert [name for name, _ in refused.headers] == [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "Retry-After",
        "X-RateLimit-Reset",
    ]
    headers = dict(refused.headers)
    assert headers["Retry-After"] == "40"  # 39.75 s left, rounded up
    assert headers["X-RateLimit-Reset"] == str(1_000_060)  # the window's end, Unix time
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("3", "0")
    assert throttle.hit("b", 3, 60.0).allowed  # another key, another window
    clock.now = 59.9
    assert dict(throttle.hit("a", 3, 60.0).headers)["Retry-After"] == "1"  # at least 1
    clock.now = 60.0  # the window is over: a new one opens at this request
    assert dict(throttle.hit("a", 3, 60.0).headers)["X-RateLimit-Remaining"] == "2"
    clock.now = 61.0
    assert [throttle.hit("a", 3, 60.0).allowed for _ in range(3)] == [True, True, False]
    throttle.reset()
    assert throttle.hit("a", 3, 60.0).allowed


def test_fixed_window_refused_requests_are_not_counted() -> None:
    clock = FakeClock()
    throttle = FixedWindow(monotonic=clock.monotonic, wall=clock.wall)
    for _ in range(50):
        throttle.hit("a", 2, 1.0)
    clock.now = 1.0
    assert [throttle.hit("a", 2, 1.0).allowed for _ in range(3)] == [True, True, False]


def test_token_bucket_refills_at_its_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(monotonic=clock.monotonic)
    assert [bucket.take("a", 4.0, 2) for _ in range(3)] == [True, True, False]
    clock.now = 0.2  # 0.8 of a token
    assert not bucket.take("a", 4.0, 2)
    clock.now = 0.25
    assert bucket.take("a", 4.0, 2) and not bucket.take("a", 4.0, 2)
    clock.now = 100.0  # full again, never more than the burst
    assert [bucket.take("a", 4.0, 2) for _ in range(3)] == [True, True, False]
    assert bucket.take("b", 4.0, 2)
    bucket.reset()
    assert bucket.take("a", 4.0, 2)


def test_keys_are_per_token_and_hold_no_token() -> None:
    one = limit_key("Bearer secret-one", "127.0.0.1")
    assert one == limit_key("bearer  secret-one ", "10.0.0.9")
    assert one != limit_key("Bearer secret-two", "127.0.0.1")
    assert "secret" not in one
    assert limit_key("", "127.0.0.1") == limit_key("Basic x", "127.0.0.1") == "ip:127.0.0.1"


# --- Laravel's fixed window over HTTP -----------------------------------------------------------
def test_no_limit_headers_when_the_limiters_are_off(server: Simulator) -> None:
    reply = burst(server, 1)[0]
    assert reply.status_code == 200
    assert not {"X-RateLimit-Limit", "X-RateLimit-Remaining", "Retry-After"} & set(reply.headers)


def test_fixed_window_headers_on_every_api_response(server: Simulator) -> None:
    server.configure(rate_limit_max=8, rate_window=30.0)
    replies = burst(server, 3)
    assert [r.status_code for r in replies] == [200] * 3
    assert [r.headers["X-RateLimit-Remaining"] for r in replies] == ["7", "6", "5"]
    assert all(r.headers["X-RateLimit-Limit"] == "8" for r in replies)
    assert all("Retry-After" not in r.headers for r in replies)
    # errors the application answers carry them too, counted in the same window
    headers = {"Authorization": "Bearer sim-token"}
    base = f"{server.base_url}/api/v1/conversations"
    unknown = requests.get(f"{base}/{'0' * 8}-0000-4000-8000-{'0' * 12}/sessions", headers=headers)
    invalid = requests.get(sessions_url(server), params={"per_page": 500}, headers=headers)
    assert (unknown.status_code, invalid.status_code) == (404, 422)
    assert [unknown.headers["X-RateLimit-Remaining"], invalid.headers["X-RateLimit-Remaining"]] == [
        "4",
        "3",
    ]
    # a wrong token is counted under its own key
    wrong = requests.get(sessions_url(server), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert (wrong.headers["X-RateLimit-Limit"], wrong.headers["X-RateLimit-Remaining"]) == (
        "8",
        "7",
    )
    # a path that is no API route is neither counted nor marked
    elsewhere = requests.get(f"{server.base_url}/elsewhere", headers=headers)
    assert elsewhere.status_code == 404 and "X-RateLimit-Limit" not in elsewhere.headers
    assert burst(server, 1)[0].headers["X-RateLimit-Remaining"] == "2"


def test_fixed_window_429_body_and_retry_headers(server: Simulator) -> None:
    server.configure(rate_limit_max=4, rate_window=30.0)
    started = time.time()
    replies = burst(server, 6)
    assert [r.status_code for r in replies] == [200] * 4 + [429] * 2
    refused = replies[-1]
    assert refused.json() == {"success": False, "message": "Too Many Attempts."}
    headers = refused.headers
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("4", "0")
    retry_after = int(headers["Retry-After"])
    elapsed = time.time() - started
    assert math.ceil(30 - elapsed) <= retry_after <= 30  # seconds to the window's end, rounded up
    # the reset is real Unix time (not the simulated Date, months ahead), 30 s after the window
    # opened, rounded up
    reset = int(headers["X-RateLimit-Reset"])
    assert started + 30 - 1 <= reset <= time.time() + 30 + 1
    assert abs(reset - (time.time() + retry_after)) <= 1.5
    assert server.now() > DATA_END  # the data clock runs on its own
    statuses = [r.status for r in server.requests]
    assert statuses == [200] * 4 + [429] * 2


def test_fixed_window_reopens_after_retry_after(server: Simulator) -> None:
    server.configure(rate_limit_max=3, rate_window=1.0)
    replies = burst(server, 5)
    assert [r.status_code for r in replies][:3] == [200] * 3
    refused = [r for r in replies if r.status_code == 429]
    assert refused, "five requests in a row should not take a second"
    retry_after = int(refused[0].headers["Retry-After"])
    assert retry_after == 1  # at least 1, even with less than a second left
    time.sleep(retry_after)
    again = burst(server, 1)[0]
    assert again.status_code == 200
    assert again.headers["X-RateLimit-Remaining"] == "2"


def test_fixed_window_share_of_429_in_a_burst(server: Simulator) -> None:
    server.configure(rate_limit_max=40, rate_window=1.0)
    started = time.monotonic()
    statuses = [r.status_code for r in burst(server, 100)]
    windows = math.floor(time.monotonic() - started) + 1  # windows the burst may have touched
    counts = Counter(statuses)
    assert set(counts) <= {200, 429}
    assert statuses[:40] == [200] * 40
    assert 40 <= counts[200] <= 40 * windows
    assert Counter(r.status for r in server.requests) == counts  # the share, from the record
    if windows == 1:
        assert counts[429] == 60


def test_fixed_window_knobs_change_live_and_reset(server: Simulator) -> None:
    server.configure(rate_limit_max=2, rate_window=60.0)
    assert [r.status_code for r in burst(server, 3)] == [200, 200, 429]
    server.rate_limit_max = 5  # plain assignment works too: the open window has room again
    assert [r.status_code for r in burst(server, 4)] == [200, 200, 200, 429]
    server.reset_rate_limits()
    assert burst(server, 1)[0].headers["X-RateLimit-Remaining"] == "4"
    server.rate_limit_max = 0
    assert "X-RateLimit-Limit" not in burst(server, 1)[0].headers


def test_random_429_uses_the_window_limit_when_on(server: Simulator) -> None:
    server.configure(rate_limit=1.0, retry_after=7, rate_limit_max=25)
    reply = burst(server, 1)[0]
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "7"
    assert (reply.headers["X-RateLimit-Limit"], reply.headers["X-RateLimit-Remaining"]) == (
        "25",
        "0",
    )
    server.configure(rate_limit=0.0)
    # the random 429 stood in front of the throttle: it was not counted
    assert burst(server, 1)[0].headers["X-RateLimit-Remaining"] == "24"


# --- the token bucket over HTTP -----------------------------------------------------------------
def test_token_bucket_bare_429(server: Simulator) -> None:
    server.configure(bucket_rate=5.0, bucket_burst=4)
    started = time.monotonic()
    replies = burst(server, 12)
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in replies]
    assert statuses[:4] == [200] * 4
    ok = statuses.count(200)
    assert 4 <= ok <= 4 + math.floor(5.0 * elapsed) + 1
    refused = [r for r in replies if r.status_code == 429]
    assert refused
    for reply in refused:
        assert reply.headers["Retry-After"] == "1"
        assert not {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} & set(
            reply.headers
        )
        assert reply.json() == {"success": False, "message": "Too Many Requests."}
    assert all("X-RateLimit-Limit" not in r.headers for r in replies)
    # another token has its own bucket
    assert [r.status_code for r in burst(server, 4, token="other")] == [401] * 4
    time.sleep(0.5)  # 2.5 tokens back
    assert [r.status_code for r in burst(server, 2)] == [200, 200]


def test_token_bucket_share_of_429_in_a_burst(server: Simulator) -> None:
    server.configure(bucket_rate=20.0, bucket_burst=10)
    started = time.monotonic()
    statuses = [r.status_code for r in burst(server, 80)]
    elapsed = time.monotonic() - started
    ok = statuses.count(200)
    assert 10 <= ok <= 10 + math.ceil(20.0 * elapsed) + 1
    assert statuses.count(429) == 80 - ok
    assert Counter(r.status for r in server.requests)[429] == 80 - ok


def test_paced_requests_pass_the_bucket(server: Simulator) -> None:
    server.configure(bucket_rate=20.0, bucket_burst=2)
    statuses = []
    with requests.Session() as session:
        session.headers["Authorization"] = "Bearer sim-token"
        for _ in range(10):
            statuses.append(session.get(sessions_url(server), timeout=10).status_code)
            time.sleep(0.1)  # half the bucket's rate
    assert statuses == [200] * 10


def test_both_limiters_at_once(server: Simulator) -> None:
    server.configure(bucket_rate=1.0, bucket_burst=3, rate_limit_max=2, rate_window=60.0)
    replies = burst(server, 4)
    assert [r.status_code for r in replies] == [200, 200, 429, 429]
    assert "X-RateLimit-Reset" in replies[2].headers  # the throttle refused this one
    assert replies[3].headers["Retry-After"] == "1"  # the bucket, in front, this one
    assert "X-RateLimit-Limit" not in replies[3].headers
