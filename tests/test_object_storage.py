"""A root on object storage: a real S3-compatible HTTP server (moto's server mode) started on
127.0.0.1 by the test, in a child process (delta-rs holds the GIL in places: a server thread in
this process could not answer). A sync, a second incremental sync, a read, time travel and a
compaction; credentials never stored or shown; a missing bucket, missing credentials, an unknown
scheme and a missing root are clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames.simulator import Simulator

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

SECRET = "s3-secret-key-never-stored"
_SERVER = textwrap.dedent(
    """
    import sys
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print("%s:%s" % server.get_host_and_port(), flush=True)
    sys.stdin.read()  # until the test closes it
    server.stop()
    """
)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """An S3-compatible server on 127.0.0.1 with a bucket ``snapshots``; its storage options."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        endpoint = "http://" + server.stdout.readline().strip()
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="mihu",
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="snapshots")
        options = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "mihu",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
        yield {"options": options, "client": client, "endpoint": endpoint}
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def _by_uuid(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("uuid", ignore_index=True)


def test_sync_read_time_travel_and_compact_on_s3(s3, caplog):
    root, options = "s3://snapshots/acme/sessions", s3["options"]
    with Simulator(seed=71, sizes=(3, 120, 260), retry_after=0) as sim:
        convs = sim.conversation_uuids
        sync = {"base_url": sim.base_url, "token": sim.token, "cache": None, "progress": False}
        first = mf.sync_snapshots(root, convs, storage_options=options, **sync)
        assert first.attrs["mihu_frames"]["rows_new"] == sum((3, 120, 260))
        version = first.attrs["mihu_frames"]["version"]
        touched = sim.touch_sessions(convs[2], 7)
        sim.reset_requests()
        second = mf.sync_snapshots(root, convs, storage_options=options, **sync)
        attrs = second.attrs["mihu_frames"]
        assert attrs["conversations_incremental"] == 3 and sim.request_count == 3
        assert attrs["rows_changed"] == len(touched) and attrs["rows_new"] == 0
        assert attrs["version"] > version
        assert attrs["snapshot"].startswith(f"{root}/latest/_delta_log/")
        truth = sorted(sim.ground_truth(), key=lambda s: s["uuid"])
        # a third sync: the versions it supersedes go to a second file of versions/' month
        third = mf.sync_snapshots(root, convs[2:], storage_options=options, **sync)
        assert third.attrs["mihu_frames"]["rows_changed"] == 0
        again = sim.touch_sessions(convs[1], 4)
        fourth = mf.sync_snapshots(root, convs, storage_options=options, **sync)
        assert fourth.attrs["mihu_frames"]["rows_changed"] == len(again)
        truth = sorted(sim.ground_truth(), key=lambda s: s["uuid"])
        second = fourth
    latest = mf.read_snapshots(root, storage_options=options)
    assert_matches_truth(_by_uuid(latest), truth)
    pd.testing.assert_frame_equal(latest, second)
    before = mf.read_snapshots(root, as_of=version, storage_options=options)
    pd.testing.assert_frame_equal(before, first)
    history = mf.read_snapshots(root, latest=False, storage_options=options)
    assert len(history) == len(latest) + len(touched) + len(again)
    meta = mf.snapshot_metadata(attrs["snapshot"], storage_options=options)
    assert meta["rows_changed"] == len(touched) and meta["version"] == attrs["version"]

    report = mf.compact_snapshots(root, storage_options=options)
    assert report.files_after < report.files_before and report.rows_after == len(history)
    pd.testing.assert_frame_equal(mf.read_snapshots(root, storage_options=options), latest)

    # the credentials are in no object of the bucket, in no log line
    objects = s3["client"].list_objects_v2(Bucket="snapshots", Prefix="acme/")["Contents"]
    assert any(o["Key"].endswith(".parquet") for o in objects)
    for item in objects:
        body = s3["client"].get_object(Bucket="snapshots", Key=item["Key"])["Body"].read()
        assert SECRET.encode() not in body, item["Key"]
    assert SECRET not in caplog.text


def test_environment_variables_give_the_credentials(s3, monkeypatch):
    for key, value in s3["options"].items():
        monkeypatch.setenv(key, value)
    root = "s3://snapshots/from-env"
    frame = mf.sessions_frame(
        [{"uuid": "e0000000-0000-4000-8000-000000000001", "conversation_uuid": "c1"}],
        fetched_at="2026-11-01T00:00:00Z",
    )
    assert mf.write_snapshot(frame, root) is not None
    pd.testing.assert_frame_equal(mf.read_snapshots(root), frame)


def test_storage_errors_are_clear_and_never_show_a_credential(s3, monkeypatch):
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    options = s3["options"]
    frame = mf.empty_frame()
    with pytest.raises(mf.SnapshotStoreError, match="bucket does not exist") as caught:
        mf.write_snapshot(frame, "s3://no-such-bucket/root", storage_options=options)
    assert "s3://no-such-bucket/root" in str(caught.value) and SECRET not in str(caught.value)
    anonymous = {k: v for k, v in options.items() if "KEY" not in k}
    with pytest.raises(mf.SnapshotStoreError, match="no credentials were found"):
        mf.write_snapshot(frame, "s3://snapshots/anonymous", storage_options=anonymous)
    with pytest.raises(mf.SnapshotStoreError, match="Unknown scheme: nope"):
        mf.read_snapshots("nope://bucket/root")
    with pytest.raises(mf.NotASnapshotRootError, match="s3://snapshots/nothing-here"):
        mf.read_snapshots("s3://snapshots/nothing-here", storage_options=options)
    listed = s3["client"].list_objects_v2(Bucket="snapshots", Prefix="anonymous/")
    assert listed["KeyCount"] == 0  # nothing written by the refused writes
