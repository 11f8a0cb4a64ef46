"""The command line: a thin layer over the library, run as a real subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from deltalake import DeltaTable

import mihu_frames as mf
from mihu_frames.cli import cli_words

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
    assert (df["status"] != "untagged").all()


def test_fetch_reports_errors_cleanly(sim, tmp_path):
    env = {"MIHU_API_TOKEN": "wrong", "MIHU_BASE_URL": sim.base_url}
    result = _run(
        "fetch", sim.conversation_uuids[1], "--no-cache", "--root", str(tmp_path), env=env
    )
    assert result.returncode == 2
    assert "AuthenticationError" in result.stderr and "Traceback" not in result.stderr
    bad = _run("fetch", "not-a-uuid", "--no-cache", env=env)
    assert bad.returncode == 2 and "not a conversation UUID" in bad.stderr


def test_help_lists_commands_and_each_command_only_its_options():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("fetch", "sync", "compact", "demo", "stats", "simulate"):
        assert command in result.stdout
    fetch_help = _run("fetch", "--help").stdout
    assert "--status" in fetch_help and "MIHU_API_TOKEN" in fetch_help
    assert "--offline" in fetch_help and "--refresh" in fetch_help
    sync_help = _run("sync", "--help").stdout
    assert "--full" in sync_help and "--overlap" in sync_help and "--status" in sync_help
    assert "--offline" not in sync_help and "--refresh" not in sync_help  # a sync reads fresh
    simulate_help = _run("simulate", "--help")
    assert simulate_help.stdout.startswith("usage: mihu-frames simulate")
    from mihu_frames.simulator.cli import build_parser

    undocumented = [a.option_strings for a in build_parser()._actions if not a.help]
    assert undocumented == [], f"options without help text: {undocumented}"


def test_filter_flags_take_one_value_each_and_never_swallow_a_uuid(sim, tmp_path):
    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    conversation = sim.conversation_uuids[4]
    result = _run(
        "fetch",
        "--status",
        "completed",
        conversation,
        "--status",
        "active,timed_out",
        "--no-cache",
        "--root",
        str(tmp_path / "snaps"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    df = mf.read_snapshots(tmp_path / "snaps")
    tags = sim.tags()
    assert sorted(df["uuid"]) == sorted(s["uuid"] for s in sim.ground_truth(conversation))
    assert all(df["status"].astype(str) == [tags[u][0] for u in df["uuid"]])


def test_a_fetch_where_everything_failed_writes_nothing_and_says_so(sim, tmp_path):
    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    missing = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    root = tmp_path / "snaps"
    result = _run(
        "fetch", missing, "--on-error", "warn", "--no-cache", "--root", str(root), env=env
    )
    assert result.returncode == 1
    assert not root.exists()
    assert "RuntimeWarning" not in result.stderr and "Traceback" not in result.stderr
    assert f"left out: conversation {missing}, page 1: HTTP 404" in result.stderr
    assert "nothing loaded" in result.stderr and "no snapshot written" in result.stderr


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    from mihu_frames.simulator import Simulator

    with Simulator(sizes=[500], latency=3.0) as slow:
        env = {**os.environ, "MIHU_API_TOKEN": slow.token, "MIHU_BASE_URL": slow.base_url}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mihu_frames",
                "fetch",
                slow.conversation_uuids[0],
                "--no-cache",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 30
        while slow.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the load is under way
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == "interrupted\n"


def test_stats_plot_without_matplotlib_is_one_line_before_any_table(tmp_path, sim, make_client):
    mf.write_snapshot(make_client(sim).sessions(sim.conversation_uuids[1]), tmp_path / "snaps")
    hide = tmp_path / "no_matplotlib"
    (hide / "matplotlib").mkdir(parents=True)
    (hide / "matplotlib" / "__init__.py").write_text("raise ImportError('not installed')\n")
    pythonpath = os.pathsep.join([str(hide), str(ROOT)])
    result = _run(
        "stats", str(tmp_path / "snaps"), "--plot", str(tmp_path / "f.png"),
        env={"PYTHONPATH": pythonpath},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: --plot needs matplotlib: pip install 'mihu_frames[plot]'"
    ]


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
    # The demo names the version its write produced, and the commit holding its record.
    commit = max((tmp_path / "snaps" / "latest" / "_delta_log").glob("*.json"))
    assert f"snapshot: latest/ version {int(commit.stem)} ({commit})" in result.stdout


def test_stats_prints_a_short_summary_and_details_on_request(sim, make_client, tmp_path):
    df = make_client(sim).sessions(sim.conversation_uuids[1:5])
    mf.write_snapshot(df, tmp_path / "snaps")
    short = _run("stats", str(tmp_path / "snaps"))
    assert short.returncode == 0, short.stderr
    lines = short.stdout.splitlines()
    assert len(lines) <= 10, short.stdout
    assert lines[0].startswith(f"sessions      {len(df):,} in 4 conversations")
    assert "median" in short.stdout and "busiest hour" in short.stdout
    assert not re.search(r"\d\.\d{6}", short.stdout)  # no durations to the microsecond
    png = tmp_path / "figures.png"
    result = _run(
        "stats",
        str(tmp_path / "snaps"),
        "--all",
        "--by",
        "agent_uuid",
        "--freq",
        "7D",
        "--last",
        "3",
        "--tz",
        "Europe/Berlin",
        "--plot",
        str(png),
    )
    assert result.returncode == 0, result.stderr
    assert "session statistics by agent_uuid" in result.stdout
    assert "median" in result.stdout and "peak" in result.stdout and "Mon" in result.stdout
    assert "earlier buckets not shown" in result.stdout
    assert len(result.stdout.splitlines()) < len(lines) + 60
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
    version = DeltaTable(Path(root) / "latest").version()
    assert f"snapshot version {version} (" in second.stdout  # the version the sync produced
    latest = mf.read_snapshots(root)
    truth = {s["uuid"]: s["updated_at"] for c in conversations for s in fresh_sim.ground_truth(c)}
    assert dict(zip(latest["uuid"], latest["updated_at"], strict=True)) == {
        u: pd.Timestamp(t).tz_convert("UTC") for u, t in truth.items()
    }
    history = mf.read_snapshots(root, latest=False)
    compact = _run("compact", root)
    assert compact.returncode == 0, compact.stderr
    assert "compacted 1 history files into 1" in compact.stdout  # the first sync superseded none
    assert f"version {DeltaTable(Path(root) / 'latest').version()}" in compact.stdout
    assert f"kept {len(history):,} versions; dropped 0 identical re-fetches" in compact.stdout
    pd.testing.assert_frame_equal(
        mf.read_snapshots(root).sort_values("uuid", ignore_index=True),
        latest.sort_values("uuid", ignore_index=True),
    )
    pruned = _run("compact", root, "--prune-before", "2100-01-01")
    assert pruned.returncode == 0, pruned.stderr
    assert "3 superseded before 2100-01-01" in pruned.stdout  # the 3 older versions
    assert len(mf.read_snapshots(root, latest=False)) == len(history) - 3
    for bad in (["--offline"], ["--overlap", "-3"]):
        result = _run("sync", conversations[0], "--root", root, *bad, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_folder_that_is_not_a_root_is_one_line_and_exit_2(tmp_path, sim, make_client):
    mf.write_snapshot(make_client(sim).sessions(sim.conversation_uuids[1]), tmp_path / "root")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a root")
    for folder in ("missing", "root/latest", "other"):
        for command in (["stats"], ["compact"]):
            result = _run(*command, str(tmp_path / folder))
            assert result.returncode == 2, (folder, command, result.stdout)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
            assert str(tmp_path / folder) in lines[0] and "root" in lines[0]
            assert result.stdout == ""


# --------------------------------------------------------------------------- issue 21 and 18


def _listed(path: Path) -> list[str]:
    return sorted(pd.read_csv(path)["uuid"])


def test_listing_filters_take_several_values_and_union_them(sim, tmp_path):
    # The README: "a filter flag takes one value (repeat it, or use commas)". The API takes
    # one value per filter: the library asks once per value and unions the listings.
    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    every = mf.list_conversations(base_url=sim.base_url, token=sim.token, cache=None)
    assert set(every["channel"]) >= {"whatsapp", "web", "phone"}
    assert set(every["status"]) == {"open", "closed"}

    def expected(channels=None, statuses=None) -> list[str]:
        keep = every["channel"].isin(channels or every["channel"]) & every["status"].isin(
            statuses or every["status"]
        )
        return sorted(every.loc[keep, "uuid"])

    cases = {
        ("--status", "open"): expected(statuses=["open"]),
        ("--status", "closed"): expected(statuses=["closed"]),
        ("--channel", "whatsapp", "--channel", "web"): expected(["whatsapp", "web"]),
        ("--channel", "whatsapp,web"): expected(["whatsapp", "web"]),
        ("--channel", "phone,web", "--status", "closed,open"): expected(["phone", "web"]),
        ("--channel", "whatsapp", "--channel", "web,phone", "--status", "closed"): expected(
            ["whatsapp", "web", "phone"], ["closed"]
        ),
    }
    for number, (flags, uuids) in enumerate(cases.items()):
        out = tmp_path / f"convs{number}.csv"
        result = _run("conversations", *flags, "--no-cache", "--out", str(out), env=env)
        assert result.returncode == 0, (flags, result.stderr)
        assert result.stderr == ""
        assert uuids and _listed(out) == uuids, flags
        assert len(pd.read_csv(out)) == len(uuids)  # each conversation once
    # The command is a thin layer: the library takes the lists itself.
    both = mf.list_conversations(
        channel=["whatsapp", "web"], base_url=sim.base_url, token=sim.token, cache=None
    )
    assert sorted(both["uuid"]) == expected(["whatsapp", "web"])
    assert both["uuid"].is_unique and list(both.columns) == list(every.columns)
    assert both.attrs["mihu_frames"]["filters"] == {"channel": ["whatsapp", "web"]}
    assert both.attrs["mihu_frames"]["requests"] == 2  # one listing per value


def test_a_library_warning_is_one_line_on_stderr(server_factory, tmp_path):
    # A timestamp outside years 1-9999 once its offset is applied is nulled, with a warning:
    # the command line used to silence it.
    from hostile import conversation_id, dumps, make_session, page_payload

    conversation = conversation_id(1)
    late = make_session(conversation, 0, updated_at="9999-12-31T23:00:00-12:00")
    body = dumps(page_payload([late], page=1, per_page=100, total=1))
    server = server_factory(lambda path, headers: (200, {"Content-Type": "application/json"}, body))
    env = {"MIHU_API_TOKEN": "token-for-tests", "MIHU_BASE_URL": server.base_url}
    result = _run("fetch", conversation, "--no-cache", "--root", str(tmp_path / "snaps"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "warning: 1 timestamp(s) fall outside years 1-9999 once their offset is applied: "
        "loaded as null, their text kept in 'extra'"
    ]
    assert "1 sessions, 1 conversations" in result.stdout


def test_a_file_error_or_a_locked_cache_is_one_line_never_a_traceback(sim, tmp_path):
    import sqlite3

    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    (tmp_path / "a_file").write_text("not a folder")
    conversation = sim.conversation_uuids[1]
    fetch = _run(
        "fetch", conversation, "--no-cache", "--root", str(tmp_path / "a_file" / "snaps"), env=env
    )
    listing = _run(
        "conversations", "--no-cache", "--out", str(tmp_path / "nowhere" / "c.csv"), env=env
    )
    for result, words in ((fetch, "Not a directory"), (listing, "non-existent directory")):
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    # A cache file another process keeps locked: CacheLockedError, one line, exit 2.
    cache = tmp_path / "cache.sqlite"
    warm = _run(
        "fetch", conversation, "--cache", str(cache), "--root", str(tmp_path / "s"), env=env
    )
    assert warm.returncode == 0, warm.stderr
    holder = sqlite3.connect(cache, isolation_level=None)
    holder.execute("begin exclusive")
    try:
        locked = _run(
            "fetch", conversation, "--refresh", "--cache", str(cache), "--timeout", "1",
            "--root", str(tmp_path / "s"), env=env,
        )  # fmt: skip
    finally:
        holder.rollback()
        holder.close()
    assert locked.returncode == 2
    lines = locked.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CacheLockedError: "), lines
    assert "--cache path" in lines[0] and "cache= path" not in lines[0]


def test_errors_name_the_command_lines_flags_not_the_librarys_options(sim, tmp_path):
    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    conversation = sim.conversation_uuids[1]
    root = str(tmp_path / "snaps")
    first = _run("sync", conversation, "--root", root, "--status", "all", "--no-cache", env=env)
    assert first.returncode == 0, first.stderr
    other = _run("sync", conversation, "--root", root, "--status", "completed", env=env)
    assert other.returncode == 2
    assert "or pass --refetch to fetch every conversation anew" in other.stderr
    assert (
        "holds sessions fetched with --status all, no --type; this sync asks for --status "
        "completed, no --type. Sync without status/type" in other.stderr
    )
    offline = _run("fetch", conversation, "--offline", "--no-cache", env=env)
    assert offline.returncode == 2
    assert offline.stderr == "error: --offline needs a cache; this client has --no-cache\n"
    missing = _run(
        "fetch", conversation, "--offline", "--cache", str(tmp_path / "empty.sqlite"), env=env
    )
    assert missing.returncode == 2
    assert "--offline" in missing.stderr and "offline=True" not in missing.stderr
    no_address = _run("fetch", conversation, env={"MIHU_BASE_URL": "", "MIHU_SUBDOMAIN": ""})
    assert no_address.returncode == 2
    assert "pass --base-url or --subdomain, or set MIHU_BASE_URL" in no_address.stderr
    no_token = subprocess.run(
        [sys.executable, "-m", "mihu_frames", "fetch", conversation, "--no-cache"],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MIHU_")},
            "MIHU_BASE_URL": sim.base_url,
        },
    )
    assert no_token.returncode == 2
    assert no_token.stderr == (
        "error: AuthenticationError: no API token: set MIHU_API_TOKEN (--offline reads the "
        "cache without one)\n"
    )
    for result in (other, offline, missing, no_address, no_token):
        assert len(result.stderr.splitlines()) == 1
        assert not re.search(r"\b[a-z_]+=(True|False|None)\b", result.stderr), result.stderr
    assert cli_words("pass base_url= or subdomain=, or MIHU_BASE_URL") == (
        "pass --base-url or --subdomain, or MIHU_BASE_URL"
    )
    assert cli_words("set MIHU_API_TOKEN or pass token= (offline=True reads the cache)") == (
        "set MIHU_API_TOKEN (--offline reads the cache)"
    )
    assert cli_words("with progress=False and full=True") == "with --no-progress and --full"


def test_stats_checks_every_flag_before_printing_anything(sim, make_client, tmp_path):
    mf.write_snapshot(make_client(sim).sessions(sim.conversation_uuids[1:3]), tmp_path / "snaps")
    root = str(tmp_path / "snaps")
    for flags, words in (
        (["--activity", "--freq", "1week"], "error: --freq: invalid frequency '1week'"),
        (["--tz", "Europe/Berlinn"], "error: --tz: unknown time zone 'Europe/Berlinn'"),
        (["--table", "--by", "agent"], "error: --by: no column ['agent']"),
    ):
        result = _run("stats", root, *flags)
        assert result.returncode == 2, (flags, result.stderr)
        assert result.stdout == "", flags  # not the summary first, then the error
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(words), lines
    assert "did you mean 'Europe/Berlin'?" in _run("stats", root, "--tz", "Europe/Berlinn").stderr


def test_a_not_found_names_the_url_and_a_wrong_base_path_says_so(sim, tmp_path):
    conversation = sim.conversation_uuids[1]
    wrong = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url + "/api/v2"}
    result = _run("fetch", conversation, "--no-cache", "--root", str(tmp_path / "s"), env=wrong)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: NotFoundError: conversation {conversation}, page 1: HTTP 404")
    assert f"GET {sim.base_url}/api/v2/api/v1/conversations/{conversation}/sessions" in line
    assert "'/api/v2'" in line and "the address looks wrong" in line and "--base-url" in line
    assert sim.token not in result.stderr


def _bar_states(stderr: str) -> list[str]:
    return [s for s in re.split(r"[\r\n]", stderr) if s.startswith("mihu sessions:")]


def test_ctrl_c_ends_the_progress_bar_where_it_stopped(tmp_path):
    from mihu_frames.simulator import Simulator

    with Simulator(sizes=[1200], latency=0.4) as slow:  # 120 pages of 10
        env = {**os.environ, "MIHU_API_TOKEN": slow.token, "MIHU_BASE_URL": slow.base_url}
        process = subprocess.Popen(
            [sys.executable, "-m", "mihu_frames", "fetch", slow.conversation_uuids[0],
             "--no-cache", "--progress", "--per-page", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while slow.request_count < 20 and time.monotonic() < deadline:
            time.sleep(0.02)  # the total (120 pages) is known, a few pages are in
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        asked = slow.request_count
    assert process.returncode == 130
    assert err.endswith("interrupted\n") and "Traceback" not in err
    last = _bar_states(err)[-1]
    match = re.match(r"mihu sessions: +(\d+)%\|[^|]*\| (\d+)/(\d+) \[.*, interrupted\]$", last)
    assert match, last
    percent, done, total = map(int, match.groups())
    assert total == 120 and done <= asked < 120 and f"{percent}" == f"{100 * done / total:.0f}", (
        last
    )
    assert "100%" not in err


@pytest.mark.parametrize("gap", [0.0, 0.05, 0.5])
def test_any_number_of_ctrl_c_prints_one_line_and_exits_130(gap):
    from mihu_frames.simulator import Simulator

    with Simulator(sizes=[500, 500, 500], latency=3.0) as slow:
        env = {**os.environ, "MIHU_API_TOKEN": slow.token, "MIHU_BASE_URL": slow.base_url}
        process = subprocess.Popen(
            [sys.executable, "-m", "mihu_frames", "fetch", *slow.conversation_uuids, "--no-cache"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while slow.request_count == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the load is under way, requests in flight for 3 s
        for _ in range(3):
            process.send_signal(signal.SIGINT)
            time.sleep(gap)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == "interrupted\n"
