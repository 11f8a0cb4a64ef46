"""Fault soak (issue 5, part 1): a large load through 429s, 5xx pages, drops and stalls.

The simulator answers 10% of requests with 429 (``Retry-After``), 5% with a 500/502/503 HTML page,
drops 2% of connections and stalls 1% past the client's timeout. The load must complete, equal the
ground truth row for row, and report its requests, retries and time; a conversation whose retries
run out is reported under ``on_error="warn"`` while the rest still load.

The figures are printed (``pytest -s`` or ``-rA`` shows them) and recorded as JUnit properties.
"""

from __future__ import annotations

import time
from collections import Counter

import pandas as pd
import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames.simulator import Simulator

CONVERSATIONS = 200
SESSIONS_EACH = 200
TIMEOUT = 0.5
RETRIES = 10
FAULTS = {
    "rate_limit": 0.10,
    "server_error": 0.05,
    "drop": 0.02,
    "stall": 0.01,
    "stall_seconds": TIMEOUT + 0.3,  # just past the client's timeout
}


def _figures(statuses: Counter[int]) -> str:
    return ", ".join(
        f"{label} {n}"
        for label, n in (
            ("429", statuses[429]),
            ("5xx", sum(v for k, v in statuses.items() if k >= 500)),
            ("dropped", statuses[0]),
            ("200 incl. stalled", statuses[200]),
        )
    )


@pytest.mark.slow
def test_fault_soak_loads_everything_and_reports_the_cost(tmp_path, record_property):
    with Simulator(
        seed=2026, sizes=[SESSIONS_EACH] * CONVERSATIONS, retry_after=1, **FAULTS
    ) as sim:
        conversations = list(sim.conversation_uuids)
        exhausted = conversations[137]
        # Every attempt at this conversation's first page fails: its retries run out.
        sim.fail_next("503", n=RETRIES + 1, conversation=exhausted)
        client = mf.MihuClient(
            sim.base_url,
            token=sim.token,
            cache=tmp_path / "cache.sqlite",
            timeout=TIMEOUT,
            retries=RETRIES,
            backoff_factor=0.01,
        )
        started = time.perf_counter()
        with pytest.warns(RuntimeWarning, match=exhausted):
            df = client.sessions(conversations, on_error="warn", progress=False)
        seconds = time.perf_counter() - started
        time.sleep(FAULTS["stall_seconds"])  # a stalled request is logged when it is answered
        statuses = Counter(r.status for r in sim.requests)
        served = len(sim.requests)

        # The conversations that loaded are now in the cache: a reload asks nothing.
        loaded = [c for c in conversations if c != exhausted]
        sim.reset_requests()
        again = client.sessions(loaded, progress=False)
        reload_requests = sim.request_count
        truth = [s for c in loaded for s in sim.ground_truth(c)]
        client.close()

    attrs = df.attrs["mihu_frames"]
    summary = (
        f"fault soak: {len(df)} sessions of {len(loaded)} conversations, {attrs['pages']} pages, "
        f"{attrs['requests']} requests, {attrs['retries']} retries, "
        f"{attrs['fetch_seconds']:.1f} s (wall {seconds:.1f} s); "
        f"server saw {served} requests: {_figures(statuses)}"
    )
    print("\n" + summary)
    for name in ("requests", "retries", "pages", "fetch_seconds"):
        record_property(name, attrs[name])

    # the load completed and equals the ground truth, row for row
    assert_matches_truth(df, truth)
    assert len(df) == (CONVERSATIONS - 1) * SESSIONS_EACH
    # the exhausted conversation is reported, whole, and nothing of it is in the frame
    [error] = attrs["errors"]
    assert error["conversation"] == exhausted and error["error"] == "ServerError"
    assert error["page"] == 1 and error["status_code"] == 503
    assert exhausted not in set(df["conversation_uuid"])
    # the cost is reported and plausible: every fault kind happened and was retried
    pages = (CONVERSATIONS - 1) * SESSIONS_EACH // 100
    assert attrs["pages"] == pages
    assert statuses[429] > 0 and statuses[0] > 0 and statuses[200] > pages  # stalls answered late
    assert sum(v for k, v in statuses.items() if k >= 500) > RETRIES + 1
    assert attrs["retries"] > 0
    # every request is counted: those of the exhausted page may or may not be
    assert attrs["requests"] - attrs["retries"] in (pages, pages + 1)
    assert attrs["requests"] in (served - (RETRIES + 1), served)
    assert attrs["fetch_seconds"] >= 1.0  # at least one Retry-After: 1 was honoured
    assert 0 < attrs["fetch_seconds"] <= seconds
    # and the reload is served from the cache
    assert reload_requests == 0
    pd.testing.assert_frame_equal(
        again.drop(columns="fetched_at"), df.drop(columns="fetched_at"), check_exact=True
    )


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("503", mf.ServerError),
        ("429", mf.RateLimitError),
        ("drop", mf.ServerError),
        ("stall", mf.ResponseTimeoutError),
    ],
)
def test_exhausted_retries_under_faults_are_reported_and_the_rest_load(kind, error):
    retries = 5
    with Simulator(seed=31, sizes=[150] * 12, retry_after=0, **FAULTS) as sim:
        conversations = list(sim.conversation_uuids)
        victim = conversations[5]
        sim.fail_next(kind, n=retries + 1, conversation=victim, page=2)
        options = {"timeout": TIMEOUT, "retries": retries, "backoff_factor": 0.01}
        with (
            mf.MihuClient(sim.base_url, token=sim.token, cache=None, **options) as client,
            pytest.warns(RuntimeWarning, match=victim),
        ):
            df = client.sessions(conversations, on_error="warn", progress=False)
        truth = [s for c in conversations if c != victim for s in sim.ground_truth(c)]
    assert_matches_truth(df, truth)  # the victim is left out whole: not even its page 1
    [failure] = df.attrs["mihu_frames"]["errors"]
    assert failure["conversation"] == victim and failure["page"] == 2
    assert failure["error"] == error.__name__
    print(f"\n{kind}: {df.attrs['mihu_frames']['retries']} retries, victim reported as {failure}")
