"""Freed memory handed back during a load: pyarrow's pool always, glibc's ``malloc_trim`` only
when asked (``MIHU_MALLOC_TRIM=1``), so a load leaves the host process's malloc alone by default.

The decision is read from the ``mihu_frames`` log at DEBUG, where each hand-back says what it
did; the loads are real loads from the simulator, across the runner's hand-back threshold.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator

import pytest
import requests

import mihu_frames as mf
from mihu_frames._memory import MALLOC_TRIM_VARIABLE, GiveBack, malloc_trim_wanted
from mihu_frames.runner import GIVE_BACK_SESSIONS
from mihu_frames.simulator import Simulator

POOL = "freed memory handed back (pyarrow pool)"
TRIMMED = "freed memory handed back (pyarrow pool, malloc_trim)"
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def _hand_backs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "mihu_frames" and r.getMessage().startswith("freed memory handed back")
    ]


@pytest.mark.parametrize(
    ("value", "wanted"),
    [("1", True), ("true", True), (" Yes ", True), ("on", True), ("0", False), ("", False)],
)
def test_the_variable_opts_in_to_malloc_trim(value, wanted):
    assert malloc_trim_wanted({MALLOC_TRIM_VARIABLE: value}) is wanted


def test_without_the_variable_there_is_no_malloc_trim(monkeypatch):
    monkeypatch.delenv(MALLOC_TRIM_VARIABLE, raising=False)
    assert malloc_trim_wanted({}) is False
    assert malloc_trim_wanted() is False
    assert GiveBack(100).malloc_trim is False


def test_memory_is_handed_back_every_so_many_rows_and_at_the_end(monkeypatch, caplog):
    monkeypatch.delenv(MALLOC_TRIM_VARIABLE, raising=False)
    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    give_back = GiveBack(100)
    give_back.decoded(60)
    assert _hand_backs(caplog) == []
    give_back.decoded(60)  # 120: past 100
    assert _hand_backs(caplog) == [POOL]
    give_back.decoded(79)  # 199: not yet 200
    assert _hand_backs(caplog) == [POOL]
    give_back.decoded(1)  # 200
    give_back.finished()
    assert _hand_backs(caplog) == [POOL, POOL, POOL]


def test_a_small_load_hands_nothing_back_at_its_end(caplog):
    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    give_back = GiveBack(100)
    give_back.decoded(99)
    give_back.finished()
    assert _hand_backs(caplog) == []


@glibc
def test_the_variable_is_read_when_a_load_starts(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    monkeypatch.setenv(MALLOC_TRIM_VARIABLE, "1")
    give_back = GiveBack(10)
    monkeypatch.delenv(MALLOC_TRIM_VARIABLE)
    give_back.decoded(10)
    assert GiveBack(10).malloc_trim is False
    assert _hand_backs(caplog) == [TRIMMED]


@pytest.fixture(scope="module")
def big() -> Iterator[Simulator]:
    """One conversation of exactly the runner's hand-back threshold."""
    with Simulator(seed=5, sizes=(GIVE_BACK_SESSIONS,)) as server:
        # The simulator makes a conversation's sessions on its first request (~10 s for
        # these): made here, so the loads time only themselves.
        requests.get(
            f"{server.base_url}/api/v1/conversations/{server.conversation_uuids[0]}/sessions",
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=120,
        ).raise_for_status()
        yield server


def _load(big: Simulator) -> int:
    df = mf.load_sessions(
        big.conversation_uuids[0],
        base_url=big.base_url,
        token=big.token,
        cache=None,
        progress=False,
    )
    return len(df)


def test_a_load_leaves_the_host_processes_malloc_alone_by_default(big, monkeypatch, caplog):
    monkeypatch.delenv(MALLOC_TRIM_VARIABLE, raising=False)
    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    assert _load(big) == GIVE_BACK_SESSIONS
    # once when the threshold is decoded, once when the frame is built; never malloc_trim
    assert _hand_backs(caplog) == [POOL, POOL]


@glibc
def test_a_load_trims_malloc_when_asked(big, monkeypatch, caplog):
    monkeypatch.setenv(MALLOC_TRIM_VARIABLE, "1")
    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    assert _load(big) == GIVE_BACK_SESSIONS
    assert _hand_backs(caplog) == [TRIMMED, TRIMMED]
