"""Pacing by the server's rate-limit signals (issue 13), against the simulator's real limiters.

Each load is checked for what it got (the ground truth, row for row), what it cost (429s and
time, from the simulator's own record of every request) and what it says it cost
(``df.attrs["mihu_frames"]``: requests, ``rate_limited``, ``waited_seconds``; the progress bar).
The limiters count on the real clock, so bounds on time leave room for a busy machine (other
test processes share its two cores); throughput targets live in
``benchmarks/bench_ratelimit.py``, not here. ``pytest -s`` prints each load's figures.
"""

from __future__ import annotations

import io
import logging
import math
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames.pacing import Pacer
from mihu_frames.progress import Progress
from mihu_frames.simulator import Simulator

WAIT_TEXT = re.compile(r"waiting for the rate limit, (\d+) s")


def load(sim: Simulator, client: mf.MihuClient, **options: Any) -> tuple[pd.DataFrame, float]:
    """A load of every conversation, timed; the simulator's record starts empty."""
    sim.reset_requests()
    started = time.monotonic()
    df = client.sessions(sim.conversation_uuids, progress=options.pop("progress", False), **options)
    return df, time.monotonic() - started


def truth(sim: Simulator) -> list[dict[str, Any]]:
    """Every session, in the frame's order: conversation by conversation."""
    return [s for c in sim.conversation_uuids for s in sim.ground_truth(c)]


def statuses(sim: Simulator) -> Counter[int]:
    return Counter(r.status for r in sim.requests)


def check_attrs(df: pd.DataFrame, sim: Simulator, elapsed: float) -> dict[str, Any]:
    """The load's record agrees with what the server saw."""
    attrs = df.attrs["mihu_frames"]
    seen = statuses(sim)
    assert attrs["requests"] == sum(seen.values())
    assert attrs["rate_limited"] == seen[429]
    assert attrs["retries"] == seen[429]  # nothing else failed
    assert 0 <= attrs["waited_seconds"] <= elapsed
    print(
        f"\n{attrs['pages']} pages in {elapsed:.2f} s: {attrs['requests']} requests, "
        f"{attrs['rate_limited']} answered 429, waited {attrs['waited_seconds']:.2f} s"
    )
    return attrs


def client_for(sim: Simulator, **options: Any) -> mf.MihuClient:
    options = {"cache": None, "timeout": 10, "retries": 8, **options}
    return mf.MihuClient(sim.base_url, token=sim.token, **options)


# --- Laravel's fixed window: X-RateLimit-Limit / -Remaining on every answer -------------------
@pytest.fixture
def throttled() -> Iterator[Simulator]:
    """10 requests a second, 4 conversations of 100 sessions: 40 pages of 10, 4 windows."""
    with Simulator(seed=13, sizes=(100,) * 4, rate_limit_max=10, rate_window=1.0) as sim:
        yield sim


def test_a_throttle_costs_one_429_and_the_windows_it_needs(throttled):
    sim = throttled
    with client_for(sim, max_workers=8) as client:
        df, elapsed = load(sim, client, per_page=10)
    assert_matches_truth(df, truth(sim))
    attrs = check_attrs(df, sim, elapsed)
    pages = 40
    assert attrs["pages"] == pages
    # One probe finds out when the first window ends; later windows open without a 429.
    assert attrs["rate_limited"] == 1, statuses(sim)
    # Four windows: three waits of (nearly) a window each, none much longer than a window.
    windows = math.ceil(pages / 10)
    assert elapsed >= (windows - 1) * 1.0 * 0.9
    assert attrs["waited_seconds"] >= (windows - 1) * 0.5
    assert elapsed <= (windows - 1) * 2.0 + 3.0, elapsed


def test_what_a_client_learned_of_the_window_serves_its_next_load(throttled):
    sim = throttled
    with client_for(sim, max_workers=8) as client:
        first, first_elapsed = load(sim, client, per_page=10)
        first_attrs = check_attrs(first, sim, first_elapsed)
        second, second_elapsed = load(sim, client, per_page=10)
        second_attrs = check_attrs(second, sim, second_elapsed)
    assert_matches_truth(second, truth(sim))
    # Each load records its own cost: the probe was the first load's.
    assert first_attrs["rate_limited"] == 1
    assert second_attrs["rate_limited"] == 0, statuses(sim)
    assert second_attrs["waited_seconds"] >= 2.0  # it still waited for the windows


def test_32_workers_are_held_to_the_window_too(throttled):
    sim = throttled
    with client_for(sim, max_workers=32) as client:
        df, elapsed = load(sim, client, per_page=10)
    assert_matches_truth(df, truth(sim))
    attrs = check_attrs(df, sim, elapsed)
    assert attrs["rate_limited"] <= 2, statuses(sim)
    assert elapsed <= 3 * 2.0 + 3.0, elapsed


def test_a_window_of_no_whole_seconds_costs_no_more_429s():
    """Laravel's windows last whole seconds and the pacer takes that when it can; a window of
    1.5 s (the simulator allows it) must not make it send into closed windows."""
    with (
        Simulator(seed=19, sizes=(100,) * 4, rate_limit_max=10, rate_window=1.5) as sim,
        client_for(sim) as client,
    ):
        df, elapsed = load(sim, client, per_page=10)
        assert_matches_truth(df, truth(sim))
        attrs = check_attrs(df, sim, elapsed)
    assert attrs["rate_limited"] <= 2, statuses(sim)
    assert elapsed <= 3 * 2.5 + 3.0, elapsed


def test_a_long_wait_shows_on_the_progress_bar_and_in_attrs(monkeypatch):
    """Five requests per 3 s window, 8 pages: one window's wait of about 3 s, on the bar."""
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)  # the bar writes here: not a terminal
    with (
        Simulator(seed=5, sizes=(40,), rate_limit_max=5, rate_window=3.0) as sim,
        client_for(sim) as client,
    ):
        df, elapsed = load(sim, client, per_page=5, progress=True)
        assert_matches_truth(df, truth(sim))
        attrs = check_attrs(df, sim, elapsed)
    assert attrs["pages"] == 8 and attrs["rate_limited"] == 1
    # The window's wait (Retry-After: 3, less the time the first window took) is recorded...
    assert 1.5 <= attrs["waited_seconds"] <= elapsed
    # ... and was shown while it lasted, counting from about 3 s.
    shown = [int(s) for s in WAIT_TEXT.findall(stderr.getvalue())]
    assert shown, stderr.getvalue()
    assert 2 <= max(shown) <= 3
    # The finished bar no longer says it is waiting.
    assert not WAIT_TEXT.search(stderr.getvalue().rsplit("\r", 1)[-1])


def test_the_bar_says_how_long_the_client_is_held(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    pacer = Pacer()
    progress = Progress(True, "mihu sessions", pacer)
    progress.tick()
    assert progress.wait_text == ""
    pacer.hold(23.4)  # a Retry-After for everyone
    progress.tick()
    assert progress.wait_text == "waiting for the rate limit, 23 s"
    assert "waiting for the rate limit, 23 s" in stderr.getvalue()  # at once, not in 5 s
    progress.close()
    assert progress.wait_text == ""


def test_a_short_wait_is_not_announced():
    pacer = Pacer()
    progress = Progress(True, "mihu sessions", pacer)
    pacer.hold(0.8)
    progress.tick()
    assert progress.wait_text == ""
    progress.close()


# --- a bare token bucket: 429s with Retry-After: 1 and nothing else ----------------------------
@pytest.fixture
def bucket() -> Iterator[Simulator]:
    """20 requests a second after a burst of 10; 5 conversations of 200 sessions: 100 pages."""
    with Simulator(seed=17, sizes=(200,) * 5, bucket_rate=20.0, bucket_burst=10) as sim:
        yield sim


@pytest.mark.parametrize("max_workers", [8, 32])
def test_a_bucket_is_found_and_followed_with_few_429s(bucket, max_workers):
    sim = bucket
    with client_for(sim, max_workers=max_workers) as client:
        df, elapsed = load(sim, client, per_page=10)
        rate = client.pacer.rate
    assert_matches_truth(df, truth(sim))
    attrs = check_attrs(df, sim, elapsed)
    pages = attrs["pages"]
    assert pages == 100
    # The pacer settled near the bucket's rate ...
    assert rate is not None and 10.0 <= rate <= 40.0, rate
    # ... after a first wave of 429s (the burst gives no rate) and one or two later cuts.
    assert attrs["rate_limited"] / attrs["requests"] < 0.2, statuses(sim)
    # (pages - burst) / rate = 4.5 s at best; a loose bound on a busy machine.
    assert elapsed <= 2 * (pages - 10) / 20.0 + 3.0, elapsed


def test_a_fixed_pool_is_refused_far_more_often(bucket):
    """The same client with pacing off: every thread retries on its own Retry-After."""
    sim = bucket
    with client_for(sim, max_workers=8, retries=20) as client:
        client.pacer = client.transport.pacer = Pacer(pace=False)
        fixed, fixed_elapsed = load(sim, client, per_page=10)
        fixed_attrs = check_attrs(fixed, sim, fixed_elapsed)
    sim.reset_rate_limits()
    with client_for(sim, max_workers=8) as client:
        paced, paced_elapsed = load(sim, client, per_page=10)
        paced_attrs = check_attrs(paced, sim, paced_elapsed)
    pd.testing.assert_frame_equal(
        fixed.drop(columns="fetched_at"), paced.drop(columns="fetched_at"), check_exact=True
    )
    assert paced_attrs["rate_limited"] * 3 < fixed_attrs["rate_limited"], (
        paced_attrs,
        fixed_attrs,
    )


def test_a_latency_rise_cuts_the_rate(bucket, caplog):
    """Once a bucket set a rate, answers ten times slower are a sign of overload: a cut."""
    sim = bucket
    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    slowed: list[float] = []

    def slow_down() -> None:  # once the rate is set, from the load's own first seconds
        sim.configure(latency=0.25)
        slowed.append(time.time())

    timer = threading.Timer(2.0, slow_down)
    with client_for(sim, max_workers=8) as client:
        timer.start()
        try:
            df, elapsed = load(sim, client, per_page=10)
        finally:
            timer.cancel()
    assert_matches_truth(df, truth(sim))
    check_attrs(df, sim, elapsed)
    cuts = [r for r in caplog.records if "pacer: round trips of" in r.getMessage()]
    assert slowed and cuts, [r.getMessage() for r in caplog.records if "pacer" in r.getMessage()]
    assert any(r.created >= slowed[0] for r in cuts)  # a cut answered the slowdown


# --- holds and deadlines -----------------------------------------------------------------------
def test_a_deadline_ends_a_hold_for_a_long_window():
    """A 429 saying "60 s" holds the client; the load's deadline still ends it on time."""
    with (
        Simulator(seed=3, sizes=(100,), rate_limit_max=2, rate_window=60.0) as sim,
        client_for(sim, retries=3) as client,
    ):
        started = time.monotonic()
        with pytest.raises(mf.DeadlineExceededError):
            client.sessions(sim.conversation_uuids, per_page=10, deadline=1.5, progress=False)
        elapsed = time.monotonic() - started
        assert client.pacer.waiting() > 50  # the window's end, as the 429 said
    assert elapsed < 4.0, elapsed


def test_a_noisy_429_with_headers_holds_everyone_but_does_not_slow_the_client():
    """Random 429s carrying X-RateLimit-* while answers carry none (the simulator's
    ``rate_limit``): every request waits out the Retry-After, no rate is set."""
    with Simulator(seed=23, sizes=(100,) * 3, rate_limit=0.1, retry_after=1) as sim:
        with client_for(sim, max_workers=4, retries=10) as client:
            df, elapsed = load(sim, client, per_page=10)
            rate = client.pacer.rate
        assert_matches_truth(df, truth(sim))
        attrs = check_attrs(df, sim, elapsed)
    assert rate is None
    if attrs["rate_limited"]:
        assert attrs["waited_seconds"] >= 0.9  # at least one Retry-After: 1, for everyone
