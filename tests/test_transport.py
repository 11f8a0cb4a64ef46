"""The transport: wrong addresses, base URL spellings, retries in the library's log, progress."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import textwrap
import time

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
