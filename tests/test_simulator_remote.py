"""``spawn``: the simulator in a real subprocess, changed through its control channel."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from typing import Any

import pytest
import requests

from mihu_frames.simulator import DATA_END, RequestRecord, Simulator, SpawnedSimulator, spawn
from mihu_frames.simulator.remote import REMOTE_METHODS, REMOTE_READS

SIZES = (2, 30, 120)


@pytest.fixture(scope="module")
def remote() -> Iterator[SpawnedSimulator]:
    """One subprocess for the module; each test leaves its knobs as it found them."""
    with spawn(seed=8, sizes=SIZES) as server:
        yield server


def sessions(server: SpawnedSimulator, conversation: str, **params: Any) -> requests.Response:
    return requests.get(
        f"{server.base_url}/api/v1/conversations/{conversation}/sessions",
        params=params,
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=10,
    )


def test_spawn_serves_the_same_ground_truth() -> None:
    with spawn(seed=3, sizes=[2, 30], token="t0k", latency=0.0) as server:
        assert server.token == "t0k"
        assert server.process.poll() is None and server.pid == server.process.pid
        local = Simulator(seed=3, sizes=(2, 30))
        assert server.conversation_uuids == local.conversation_uuids
        conversation = server.conversation_uuids[1]
        reply = requests.get(
            f"{server.base_url}/api/v1/conversations/{conversation}/sessions",
            params={"per_page": 100, "sort_by": "created_at", "sort_dir": "asc"},
            headers={"Authorization": "Bearer t0k"},
            timeout=10,
        )
        assert reply.json()["data"]["data"] == local.ground_truth(conversation)
        assert server.ground_truth() == local.ground_truth()
        assert server.tags() == local.tags()
        assert server.conversations_truth() == local.conversations_truth()
        process = server.process
    assert process.poll() == 0  # terminated and waited for, exited cleanly


def test_spawn_checks_options_before_starting() -> None:
    with pytest.raises(TypeError), spawn(colour="red"):
        pass
    with pytest.raises(ValueError, match="rate_window"), spawn(rate_window=0):
        pass


def test_remote_methods_are_the_simulators() -> None:
    for name in REMOTE_METHODS:
        assert inspect.signature(getattr(SpawnedSimulator, name)) == inspect.signature(
            getattr(Simulator, name)
        ), name
        assert getattr(SpawnedSimulator, name).__doc__ == getattr(Simulator, name).__doc__
    for name in REMOTE_READS:
        assert isinstance(getattr(SpawnedSimulator, name), property)
        assert hasattr(Simulator(sizes=()), name)


def test_change_data_remotely_and_see_it_served(remote: SpawnedSimulator) -> None:
    conversation = remote.conversation_uuids[1]
    before = sessions(remote, conversation).json()["data"]["total"]
    added = remote.add_sessions(conversation, 3)
    assert len(added) == 3 and all(isinstance(u, str) for u in added)
    page = sessions(remote, conversation, per_page=100).json()["data"]
    assert page["total"] == before + 3
    assert [r["uuid"] for r in page["data"][:3]] == added[::-1]  # newest started first
    assert {r["uuid"] for r in remote.ground_truth(conversation)} >= set(added)

    touched = remote.touch_sessions(conversation, 2)
    newest = sessions(remote, conversation, per_page=2, sort_by="updated_at").json()["data"]
    assert {r["uuid"] for r in newest["data"]} == set(touched)

    deleted = remote.delete_sessions(conversation, 4)
    assert sessions(remote, conversation).json()["data"]["total"] == before + 3 - 4
    assert not set(deleted) & set(remote.tags())

    new = remote.add_conversation(5)
    assert remote.conversation_uuids[-1] == new
    assert sessions(remote, new).json()["data"]["total"] == 5
    listed = requests.get(
        f"{remote.base_url}/api/v1/conversations",
        headers={"Authorization": f"Bearer {remote.token}"},
        timeout=10,
    ).json()["data"]
    assert new in {c["uuid"] for c in listed["data"]}
    assert listed["data"] == remote.conversations_truth()
    assert DATA_END < remote.now() < DATA_END + (remote.now() - DATA_END) * 2


def test_faults_and_the_request_record_remotely(remote: SpawnedSimulator) -> None:
    conversation = remote.conversation_uuids[0]
    remote.reset_requests()
    remote.fail_next("503", conversation=conversation)
    assert sessions(remote, conversation).status_code == 503
    assert sessions(remote, conversation, page=2).status_code == 200
    assert remote.request_count == 2
    records = remote.requests
    assert all(isinstance(r, RequestRecord) for r in records)
    assert [(r.status, r.page, r.conversation) for r in records] == [
        (503, 1, conversation),
        (200, 2, conversation),
    ]
    remote.reset_requests()
    assert remote.request_count == 0 and remote.requests == []


def test_knobs_remotely(remote: SpawnedSimulator) -> None:
    conversation = remote.conversation_uuids[0]
    assert remote.latency == 0.0 and remote.sizes == SIZES and remote.seed == 8
    remote.latency = 0.3
    try:
        assert remote.latency == 0.3 and remote.options.latency == 0.3
        started = time.monotonic()
        assert sessions(remote, conversation).status_code == 200
        assert time.monotonic() - started >= 0.3
    finally:
        remote.latency = 0.0

    remote.configure(rate_limit_max=3, rate_window=30.0)
    try:
        statuses = [sessions(remote, conversation).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert remote.requests[-1].status == 429
    finally:
        remote.configure(rate_limit_max=0)
        remote.reset_rate_limits()

    remote.bucket_rate, remote.bucket_burst = 1.0, 2
    try:
        statuses = [sessions(remote, conversation).status_code for _ in range(4)]
        assert statuses[:2] == [200, 200] and 429 in statuses
    finally:
        remote.bucket_rate = 0.0
    assert sessions(remote, conversation).status_code == 200

    with pytest.raises(AttributeError, match="fixed"):
        remote.seed = 9
    with pytest.raises(ValueError, match="fixed"):
        remote.configure(sizes=(1,))


def test_errors_are_raised_again_here(remote: SpawnedSimulator) -> None:
    with pytest.raises(KeyError, match="unknown conversation"):
        remote.add_sessions("not-a-conversation", 1)
    with pytest.raises(ValueError, match="fault kind"):
        remote.fail_next("418")
    with pytest.raises(ValueError):
        remote.latency = -1.0
    with pytest.raises(TypeError):
        remote.configure(colour="red")
    with pytest.raises(AttributeError, match="does not carry"):
        remote._remote("stop")
    assert remote.latency == 0.0  # still answering


def test_the_control_channel_wants_the_key(remote: SpawnedSimulator) -> None:
    with pytest.raises(AuthenticationError):
        Client(remote.control_address, authkey=b"guess")
    assert remote.request_count >= 0  # still serving its own client
