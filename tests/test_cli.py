"""The command line: a thin layer over the library, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd

import mihu_frames as mf

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "mihu_frames", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_fetch_writes_a_snapshot_and_prints_a_summary(sim, tmp_path):
    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    conversations = sim.conversation_uuids[2:4]
    result = _run(
        "fetch",
        *conversations,
        "--status",
        "all",
        "--root",
        str(tmp_path / "snaps"),
        "--cache",
        str(tmp_path / "c.sqlite"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "199 sessions, 2 conversations" in result.stdout
    assert "snapshot:" in result.stdout and sim.token not in result.stdout + result.stderr
    df = mf.read_snapshots(tmp_path / "snaps")
    assert sorted(df["uuid"]) == sorted(
        s["uuid"] for c in conversations for s in sim.ground_truth(c)
    )
    assert df["status"].notna().all()


def test_fetch_reports_errors_cleanly(sim, tmp_path):
    env = {"MIHU_API_TOKEN": "wrong", "MIHU_BASE_URL": sim.base_url}
    result = _run(
        "fetch", sim.conversation_uuids[1], "--no-cache", "--root", str(tmp_path), env=env
    )
    assert result.returncode == 2
    assert "AuthenticationError" in result.stderr and "Traceback" not in result.stderr
    bad = _run("fetch", "not-a-uuid", "--no-cache", env=env)
    assert bad.returncode == 2 and "not a conversation UUID" in bad.stderr


def test_help_lists_commands():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("fetch", "demo", "stats", "simulate"):
        assert command in result.stdout
    fetch_help = _run("fetch", "--help").stdout
    assert "--status" in fetch_help and "MIHU_API_TOKEN" in fetch_help


def test_demo_runs_without_token_or_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIHU_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mihu_frames",
            "demo",
            "--root",
            str(tmp_path / "snaps"),
            "--sizes",
            "0,1,150,420",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "cold load: 571 sessions" in result.stdout
    assert (
        "cached reload: 571 sessions, 4 conversations (1 without sessions or failed), 0 requests"
        in result.stdout
    )
    assert len(mf.read_snapshots(tmp_path / "snaps")) == 571


def test_stats_prints_tables_and_writes_figures(sim, make_client, tmp_path):
    df = make_client(sim).sessions(sim.conversation_uuids[1:5])
    mf.write_snapshot(df, tmp_path / "snaps")
    png = tmp_path / "figures.png"
    result = _run(
        "stats",
        str(tmp_path / "snaps"),
        "--by",
        "agent_uuid",
        "--freq",
        "7D",
        "--tz",
        "Europe/Berlin",
        "--plot",
        str(png),
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(df):,} sessions in 4 conversations" in result.stdout
    assert "median_duration" in result.stdout and "peak_concurrent" in result.stdout
    assert "Monday" in result.stdout
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert pd.Series(image.reshape(-1)).nunique() > 10  # something was drawn


def test_sync_twice_then_compact(fresh_sim, tmp_path):
    env = {"MIHU_API_TOKEN": fresh_sim.token, "MIHU_BASE_URL": fresh_sim.base_url}
    conversations = fresh_sim.conversation_uuids[1:]
    root = str(tmp_path / "snaps")
    first = _run("sync", *conversations, "--root", root, "--no-cache", env=env)
    assert first.returncode == 0, first.stderr
    fresh_sim.touch_sessions(conversations[2], 3)
    second = _run("sync", *conversations, "--root", root, "--no-cache", env=env)
    assert second.returncode == 0, second.stderr
    assert "3 rows changed" in second.stdout, second.stdout
    latest = mf.read_snapshots(root)
    truth = {s["uuid"]: s["updated_at"] for c in conversations for s in fresh_sim.ground_truth(c)}
    assert dict(zip(latest["uuid"], latest["updated_at"], strict=True)) == {
        u: pd.Timestamp(t).tz_convert("UTC") for u, t in truth.items()
    }
    compact = _run("compact", root)
    assert compact.returncode == 0 and "compacted 2 snapshot files into 1" in compact.stdout
    pd.testing.assert_frame_equal(
        mf.read_snapshots(root).sort_values("uuid", ignore_index=True),
        latest.sort_values("uuid", ignore_index=True),
    )
    for bad in (["--offline"], ["--overlap", "-3"]):
        result = _run("sync", conversations[0], "--root", root, *bad, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr
    assert _run("compact", str(tmp_path / "missing")).returncode == 2
