"""Crash safety (issue 5, part 3): kill -9, concurrent writers, corrupted and locked caches.

Child processes run ``sys.executable -c ...`` and are killed with ``SIGKILL`` in the middle of
``write_snapshot``, of a sync and of a cached load. Afterwards earlier snapshots stay readable,
no partial file is ever read (by mihu_frames, pyarrow.dataset or DuckDB), and the next run
completes. Two processes writing into one root at once both land (one waits for the other's
lock). The hidden temporary file a killed writer leaves in the root's staging folder (part of a
snapshot: personal data) is removed by the next write or compaction; one a live writer still
holds never is, nor any file not named exactly like ours where ours are written. A
corrupted or locked cache file gives a clear error or is rebuilt: never a traceback from sqlite
or pyarrow internals.
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames import atomic, snapshots
from mihu_frames.root import open_root
from mihu_frames.schema import from_pandas
from mihu_frames.simulator import Simulator
from mihu_frames.snapshots import snapshot_files

REPO = Path(__file__).resolve().parents[1]
CONVERSATION = "c0000000-0000-4000-8000-000000000000"
FETCHED = "2026-03-01T00:00:00Z"
ROWS = 20_000  # a snapshot of ~5 MB: long enough to be killed while it is written

# --------------------------------------------------------------------------- child processes


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until(proc: subprocess.Popen[str], want: Callable[[str], bool], timeout: float) -> str:
    """Read the child's lines until one satisfies ``want``; return it."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if want(line.strip()):
                return line.strip()
    proc.kill()
    raise AssertionError(
        f"child never said it; stderr: {proc.stderr.read() if proc.stderr else ''}"
    )


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.tmp") if p.is_file())


def assert_no_partial_file_is_read(root: Path) -> pd.DataFrame:
    """Every ``*.parquet`` is whole; every reader sees the same rows, one per session in the
    latest state; temporary files are hidden (``.name.tmp``), in the staging folder, and read
    by none of them."""
    files = sorted(root.rglob("*.parquet"))
    for path in files:
        pq.read_table(path)  # raises on a partial file
        assert not path.name.startswith(".")
    for path in temp_files(root):
        assert path.name.startswith(".") and path.parent.name == ".staging", path
    df = mf.read_snapshots(root, latest=False)
    history = snapshot_files(root)
    assert len(df) == sum(pq.read_metadata(p).num_rows for p in history)
    latest = mf.read_snapshots(root, columns=["uuid"])
    assert latest["uuid"].is_unique and set(latest["uuid"]) <= set(df["uuid"])
    if files:
        hive = ds.dataset(root / "sessions", format="parquet", partitioning="hive")
        assert hive.count_rows() == len(latest)
        glob = str(root / "sessions" / "**" / "*.parquet")
        con = duckdb.connect()
        counts = con.execute(f"select count(*), count(distinct uuid) from read_parquet('{glob}')")
        assert counts.fetchone() == (len(latest), len(latest))
        glob = str(root / "history" / "**" / "*.parquet")
        assert con.execute(f"select count(*) from read_parquet('{glob}')").fetchone() == (len(df),)
    return df


# --------------------------------------------------------------------------- write_snapshot

_WRITER = """
import os, sys
import mihu_frames as mf

root, first, count, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
go = sys.argv[5] if len(sys.argv) > 5 else None
while go and not os.path.exists(go):
    pass

def frame(i):
    noise = os.urandom(rows * 48).hex()  # incompressible: a big file
    records = [
        {"uuid": f"{i:08x}-0000-4000-8000-{j:012x}", "conversation_uuid": "{conversation}",
         "updated_at": "2026-02-01T00:00:00Z", "summary": noise[j * 96:(j + 1) * 96]}
        for j in range(rows)
    ]
    return mf.sessions_frame(records, fetched_at="{fetched}")

for i in range(first, first + count):
    df = frame(i)
    print("start", i, flush=True)
    path = mf.write_snapshot(df, root)
    print("done", i, path, flush=True)
""".replace("{conversation}", CONVERSATION).replace("{fetched}", FETCHED)


def _snapshot_numbers(df: pd.DataFrame) -> dict[str, set[int]]:
    """snapshot_id -> the writer's iteration numbers its uuids carry."""
    return {
        sid: {int(u[:8], 16) for u in group["uuid"]}
        for sid, group in df.groupby("snapshot_id", observed=True)
    }


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05])
def test_kill_during_write_snapshot_leaves_only_whole_snapshots(tmp_path, delay):
    root = tmp_path / "snaps"
    staging = root / ".staging"
    whole: dict[str, int] = {}  # snapshot id -> the writer's iteration number
    killed_with_data: set[Path] = set()  # the killed writer's temporary files holding data
    for round_ in range(2):  # the second round writes on top of the first one's leftovers
        first = round_ * 100
        child = spawn(_WRITER, str(root), str(first), "50", str(ROWS))
        for i in range(first, first + 2):
            line = read_until(child, lambda s, i=i: s.startswith(f"done {i} "), 120)
            whole[Path(line.split(" ", 2)[2]).stem] = i
            # the new writer's first write removed what the killed one left
            assert not [p for p in killed_with_data if p.exists()]
        starting = f"start {first + 2}"
        read_until(child, lambda s, starting=starting: s == starting, 60)
        leftovers = set(temp_files(staging))
        deadline = time.monotonic() + 30
        while not set(temp_files(staging)) - leftovers and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert set(temp_files(staging)) - leftovers, "the write never started"
        time.sleep(delay)
        kill9(child)

        df = assert_no_partial_file_is_read(root)
        numbers = _snapshot_numbers(df)
        # every completed snapshot is there, whole; besides, at most the one being written
        assert set(whole) <= set(numbers)
        extra = set(numbers) - set(whole)
        assert len(extra) <= 1 and all(numbers[s] == {first + 2} for s in extra)
        whole.update({s: first + 2 for s in extra})
        for sid, i in whole.items():
            assert numbers[sid] == {i}
            assert (df["snapshot_id"] == sid).sum() == ROWS
        # the latest state holds every completed write; the killed one's history file may be
        # in place before its latest state (then a pending record says so, for the next run)
        latest = mf.read_snapshots(root)
        pending = (root / ".pending_commit.json").exists()
        assert latest["uuid"].is_unique
        assert len(latest) == ROWS * (len(numbers) - (1 if pending and extra else 0))
        left = [p.name for p in temp_files(staging)]
        killed_with_data = {p for p in temp_files(staging) if p.stat().st_size}
        print(f"\nround {round_}: killed {delay}s into a write; hidden temp files left: {left}")

    # the next run completes the killed write if it must, writes its own, and removes every
    # leftover holding data (one killed before its first byte is empty: see STALE_TEMP_SECONDS)
    edit = mf.read_snapshots(root).head(10).assign(summary="the next run")
    path = mf.write_snapshot(edit, root)
    assert mf.snapshot_metadata(path)["rows"] == 10
    assert not (root / ".pending_commit.json").exists()
    assert len(mf.read_snapshots(root)) == ROWS * len(whole)
    assert path.stem in set(mf.read_snapshots(root, latest=False)["snapshot_id"])
    assert [p for p in temp_files(root) if p.stat().st_size] == []
    df = assert_no_partial_file_is_read(root)
    for sid, i in whole.items():
        assert (df["snapshot_id"] == sid).sum() == ROWS and _snapshot_numbers(df)[sid] == {i}


def test_two_processes_writing_into_one_root_both_land(tmp_path):
    root = tmp_path / "shared-root"  # does not exist yet: both create the folders at once
    go = tmp_path / "go"
    writers = [spawn(_WRITER, str(root), str(first), "8", "2000", str(go)) for first in (0, 50)]
    time.sleep(1.0)  # both import mihu_frames, then wait for the go file
    go.touch()
    outputs = [w.communicate(timeout=240) for w in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out.count("done ") == 8
    df = assert_no_partial_file_is_read(root)
    numbers = _snapshot_numbers(df)
    assert len(numbers) == 16
    assert not (root / ".pending_commit.json").exists()
    assert sorted(n for s in numbers.values() for n in s) == [*range(8), *range(50, 58)]
    assert len(mf.read_snapshots(root)) == 16 * 2000
    assert temp_files(root) == []


# --------------------------------------------------------------------------- abandoned temp files

SECRET = "Jolanta Secretname +48 600 100 200"  # personal data that must not reach the log

_HOLDER = """
import os, sys, time
import pyarrow.parquet as pq
import mihu_frames as mf

root, conversation, fetched, secret, stage = sys.argv[1:]
real_write_table, real_replace = pq.write_table, os.replace

def write_then_hang(table, where, **options):
    real_write_table(table, where, **options)
    where.flush()  # the whole snapshot is in the temporary file, not yet synced nor renamed
    print("holding", flush=True)
    time.sleep(600)

def hang_then_replace(src, dst):
    if str(src).endswith(".tmp"):  # written and synced, about to be renamed
        print("holding", flush=True)
        time.sleep(600)
    real_replace(src, dst)

if stage == "writing":
    pq.write_table = write_then_hang
else:
    os.replace = hang_then_replace
records = [
    {"uuid": f"d0000000-0000-4000-8000-{j:012x}", "conversation_uuid": conversation,
     "updated_at": "2026-02-01T00:00:00Z", "summary": secret,
     "contact": {"name": "Jolanta", "phone_number": "+48600100200"}}
    for j in range(500)
]
mf.write_snapshot(mf.sessions_frame(records, fetched_at=fetched), root)
"""


def _frame(prefix: str, rows: int, fetched: str = FETCHED) -> pd.DataFrame:
    records = [
        {
            "uuid": f"{prefix}-0000-4000-8000-{j:012x}",
            "conversation_uuid": CONVERSATION,
            "updated_at": "2026-02-01T00:00:00Z",
            "summary": f"row {j}",
        }
        for j in range(rows)
    ]
    return mf.sessions_frame(records, fetched_at=fetched)


def _temp_name(hex_part: str = "0badc0de") -> str:
    """A name exactly like the ones write_snapshot gives its temporary files."""
    return f".{snapshots.new_snapshot_id()}.parquet.{hex_part}.tmp"


def _make_old(path: Path) -> None:
    old = time.time() - 2 * atomic.STALE_TEMP_SECONDS
    os.utime(path, (old, old), follow_symlinks=False)


def _hold_a_temp_file(root: Path, stage: str = "writing") -> tuple[subprocess.Popen[str], Path]:
    """A child process stopped in write_snapshot (``"writing"`` its first file, or
    ``"renaming"`` a file once written and synced), and its largest temporary file."""
    child, held = _hold_temp_files(root, stage)
    return child, max(held, key=lambda p: p.stat().st_size)


def _hold_temp_files(root: Path, stage: str) -> tuple[subprocess.Popen[str], set[Path]]:
    staging = root / ".staging"
    before = set(temp_files(staging))
    child = spawn(_HOLDER, str(root), CONVERSATION, FETCHED, SECRET, stage)
    read_until(child, lambda s: s == "holding", 60)
    held = set(temp_files(staging)) - before
    assert held and all(atomic.TEMP_NAME.fullmatch(p.name) for p in held)
    assert max(p.stat().st_size for p in held) > 10_000
    return child, held


@pytest.mark.parametrize("next_run", ["write_snapshot", "compact_snapshots"])
def test_temp_file_of_a_killed_writer_is_removed_by_the_next_run(tmp_path, caplog, next_run):
    root = tmp_path / "snaps"
    first = mf.write_snapshot(_frame("a0000000", 50), root)
    second = mf.write_snapshot(_frame("b0000000", 30), root)
    child, tmp = _hold_a_temp_file(root)
    kill9(child)
    assert tmp.exists()  # fresh (seconds old), full of data, and no one holds its lock

    caplog.set_level(logging.DEBUG, logger="mihu_frames")
    if next_run == "write_snapshot":
        third = mf.write_snapshot(_frame("c0000000", 20, "2026-03-02T00:00:00Z"), root)
        expected = {first.stem: 50, second.stem: 30, third.stem: 20}
    else:
        (compacted,) = mf.compact_snapshots(root)  # a report iterates over the files written
        expected = {first.stem: 50, second.stem: 30}  # rows keep their snapshot ids
        assert {p.stem for p in snapshot_files(root)} == {compacted.stem}

    assert not tmp.exists()
    assert temp_files(root) == []
    removals = [r for r in caplog.records if r.levelno == logging.INFO and str(tmp) in r.message]
    assert len(removals) == 1
    assert "Jolanta" not in caplog.text and SECRET not in caplog.text
    df = assert_no_partial_file_is_read(root)
    assert df["snapshot_id"].value_counts().to_dict() == expected
    assert not df["uuid"].str.startswith("d0000000").any()  # nothing of the killed write


@pytest.mark.parametrize("stage", ["writing", "renaming"])
def test_temp_file_of_a_live_writer_is_never_removed(tmp_path, stage):
    root = tmp_path / "snaps"
    mf.write_snapshot(_frame("a0000000", 50), root)
    child, held = _hold_temp_files(root, stage)
    other = None
    try:
        for tmp in held:
            _make_old(tmp)  # so that only the writer's lock protects them, not their age
        # a writer that has just created its file and not locked it yet: empty and fresh
        fresh = root / ".staging" / _temp_name()
        fresh.touch(mode=0o600)
        contents = {p: p.read_bytes() for p in held}

        # the clean-up every write and compaction runs first, run here while the writer writes
        assert atomic.remove_abandoned_temp_files([root / ".staging"]) == []
        # other writers wait for its lock: in this process until the timeout, then in vain
        with pytest.raises(TimeoutError, match="writing the snapshot root"):
            open_root(root, lock_timeout=0.3).commit(from_pandas(_frame("b0000000", 30)))
        other = spawn(_WRITER, str(root), "7", "1", "100")  # and in another process
        read_until(other, lambda s: s == "start 7", 60)
        time.sleep(1.0)
        assert other.poll() is None, "the other writer waits"
        assert child.poll() is None, "the writer is still writing"
        assert {p: p.read_bytes() for p in held} == contents
        assert fresh.exists()
    finally:
        if child.poll() is None:
            kill9(child)
    # once the writer is gone, the waiting one goes on and removes its files (the empty one
    # is too young)
    assert other is not None
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0 and "done 7" in out, err
    assert not [p for p in held if p.exists()] and fresh.exists()
    _make_old(fresh)
    mf.write_snapshot(_frame("f0000000", 10), root)
    assert temp_files(root) == []
    assert len(mf.read_snapshots(root)) == 50 + 100 + 10


def test_only_temp_files_named_like_ours_where_ours_are_written_are_touched(tmp_path, caplog):
    root = tmp_path / "snaps"
    mf.write_snapshot(_frame("a0000000", 10), root)
    staging = root / ".staging"
    day = root / "history" / f"fetched_date={FETCHED[:10]}"  # an earlier layout's place
    ours = _temp_name()
    mine = tmp_path / "my-notes.txt"
    mine.write_text("the user's own file")
    keep = [
        staging / ".DS_Store",
        staging / ".notes.tmp",
        staging / ours.replace(".0badc0de", ""),  # no random part
        staging / _temp_name("0BADC0DE"),  # upper-case hex
        staging / _temp_name("0badc0d"),  # too short
        staging / _temp_name("0badc0de0"),  # too long
        staging / (ours + ".bak"),
        staging / ours.replace(".tmp", ".TMP"),
        staging / ours[1:],  # not hidden
        staging / ("." + ours),
        staging / ours.replace(".parquet", ".csv"),
        staging / ".part-1.parquet.0badc0de.tmp",  # not a name we give
        staging / "sub" / ours,  # too deep
        day / ".notes.tmp",
        day / "sub" / ours,
        root / ours,  # matching names outside the places we write them
        root / "sessions" / ours,
        root / "sessions" / "created_month=2026-02" / ours,
        root / "history" / ours,
        root / "elsewhere" / f"fetched_date={FETCHED[:10]}" / ours,
        tmp_path / ours,
    ]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"user data in {path.name}")
        _make_old(path)
    folder = staging / _temp_name("00000001")  # our name, but a folder
    folder.mkdir()
    (folder / "inside").write_text("user data")
    link = staging / _temp_name("00000002")  # our name, but a symlink to the user's file
    link.symlink_to(mine)
    fifo = staging / _temp_name("00000003")  # our name, but a pipe
    os.mkfifo(fifo)
    for path in (folder, link, fifo):
        _make_old(path)
    abandoned = [
        staging / _temp_name("00000004"),  # the files that are really ours
        staging / ".part-0.parquet.00000005.tmp",
        staging / ".mihu_frames_root.json.00000006.tmp",
        staging / ".pending_commit.json.00000008.tmp",
        day / _temp_name("00000007"),  # left by an earlier release, moved by a conversion
    ]
    for path in abandoned:
        path.write_bytes(b"PAR1 part of a snapshot")

    caplog.set_level(logging.INFO, logger="mihu_frames")
    mf.write_snapshot(_frame("b0000000", 10), root)
    mf.compact_snapshots(root)

    assert not [p for p in abandoned if p.exists()]  # the clean-up ran
    for path in keep:
        assert path.read_text() == f"user data in {path.name}", path
    assert (folder / "inside").read_text() == "user data"
    assert link.is_symlink() and mine.read_text() == "the user's own file"
    assert fifo.exists()
    assert [r.levelname for r in caplog.records if "temporary" in r.message] == ["INFO"] * 5


def test_a_failing_clean_up_never_fails_the_write(tmp_path, caplog, monkeypatch):
    root = tmp_path / "snaps"
    mf.write_snapshot(_frame("a0000000", 10), root)
    stuck = root / ".staging" / _temp_name()
    stuck.write_bytes(b"PAR1 part of a snapshot")
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    caplog.set_level(logging.INFO, logger="mihu_frames")
    path = mf.write_snapshot(_frame("b0000000", 10), root)
    assert mf.snapshot_metadata(path)["rows"] == 10
    assert stuck.exists()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(stuck) in warning.message and "Permission denied" in warning.message
    assert len(mf.read_snapshots(root)) == 20


def test_a_writer_whose_new_temp_file_is_removed_before_it_locks_starts_over(tmp_path, monkeypatch):
    real_flock = atomic.fcntl.flock
    taken: list[str] = []

    def flock(fd: int, operation: int) -> None:
        if operation == atomic.fcntl.LOCK_EX and not taken:
            # a cleaner takes the new, still unlocked file for abandoned (a stall or clock jump)
            (tmp,) = temp_files(tmp_path)
            taken.append(tmp.name)
            tmp.unlink()
        real_flock(fd, operation)

    monkeypatch.setattr(atomic.fcntl, "flock", flock)
    path = mf.write_snapshot(_frame("a0000000", 10), tmp_path)
    assert taken and temp_files(tmp_path) == []
    assert mf.snapshot_metadata(path)["rows"] == 10


# --------------------------------------------------------------------------- sync and load


_SYNC = """
import sys
import mihu_frames as mf
root, url, token, cache, *conversations = sys.argv[1:]
print("syncing", flush=True)
df = mf.sync_snapshots(root, conversations, base_url=url, token=token, cache=cache,
                       max_workers=2, progress=False)
print("synced", df.attrs["mihu_frames"]["snapshot"], flush=True)
"""


def _sorted_truth(sim: Simulator, conversations: list[str]) -> list[dict]:
    return sorted((s for c in conversations for s in sim.ground_truth(c)), key=lambda s: s["uuid"])


def _by_uuid(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("uuid", ignore_index=True)


def test_kill_during_sync_then_the_next_sync_completes(tmp_path):
    if not hasattr(mf, "sync_snapshots"):
        pytest.skip("mihu_frames.sync_snapshots does not exist yet")
    root, cache = tmp_path / "snaps", tmp_path / "cache.sqlite"
    with Simulator(seed=41, sizes=[250] * 8, latency=0.05) as sim:
        conversations = list(sim.conversation_uuids)
        options = {"base_url": sim.base_url, "token": sim.token, "cache": cache}
        first = mf.sync_snapshots(root, conversations, progress=False, **options)
        assert_matches_truth(_by_uuid(first), _sorted_truth(sim, conversations))
        before = sorted(root.rglob("*.parquet"))

        outcomes = []
        for when in ("mid-fetch", "at-write"):
            for c in conversations:  # something to sync: new and updated sessions
                sim.add_sessions(c, 30)
                sim.touch_sessions(c, 30)
            sim.reset_requests()
            child = spawn(_SYNC, str(root), sim.base_url, sim.token, str(cache), *conversations)
            read_until(child, lambda s: s == "syncing", 60)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and child.poll() is None:
                if when == "mid-fetch" and sim.request_count >= 6:
                    break
                if when == "at-write" and temp_files(root):
                    break
                time.sleep(0.0005)
            finished = child.poll() is not None
            if not finished:
                kill9(child)
            outcomes.append(f"{when}: {'finished first' if finished else 'killed'}")

            # earlier snapshots are untouched and readable; nothing partial is read
            assert all(path.exists() for path in before)
            assert_no_partial_file_is_read(root)
            held = mf.read_snapshots(root)
            assert held["uuid"].is_unique
            assert set(first["uuid"]) <= set(held["uuid"])

        # the next sync completes, and the latest state is the server's, row for row
        last = mf.sync_snapshots(root, conversations, progress=False, **options)
        assert_matches_truth(_by_uuid(last), _sorted_truth(sim, conversations))
        assert_matches_truth(_by_uuid(mf.read_snapshots(root)), _sorted_truth(sim, conversations))
    print("\nsync kills: " + "; ".join(outcomes))


_LOAD = """
import sys
import mihu_frames as mf
url, token, cache, *conversations = sys.argv[1:]
client = mf.MihuClient(url, token=token, cache=cache, max_workers=4)
print("loading", flush=True)
client.sessions(conversations, progress=False)
print("loaded", flush=True)
"""


def test_kill_during_a_cached_load_then_the_cache_still_serves(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with Simulator(seed=43, sizes=[300] * 12, latency=0.01) as sim:
        conversations = list(sim.conversation_uuids)
        child = spawn(_LOAD, sim.base_url, sim.token, str(cache), *conversations)
        read_until(child, lambda s: s == "loading", 60)
        deadline = time.monotonic() + 60
        while sim.request_count < 20 and time.monotonic() < deadline:
            time.sleep(0.001)
        kill9(child)
        # The simulator counts a request after its latency: let the killed run's last ones land
        # before counting this load's.
        time.sleep(20 * 0.01)
        with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
            sim.reset_requests()
            df = client.sessions(conversations, progress=False)
            asked = sim.request_count  # pages the killed run stored are not asked again
            again = client.sessions(conversations, offline=True, progress=False)
        truth = [s for c in conversations for s in sim.ground_truth(c)]
    assert_matches_truth(df, truth)
    assert_matches_truth(again, truth)
    assert asked <= 36
    print(f"\nkilled after 20+ requests; the next load asked {asked} of 36 pages again")


# --------------------------------------------------------------------------- damaged caches

INTERNAL = (sqlite3.Error, pa.ArrowException, json.JSONDecodeError)


def _corrupt(kind: str, path: Path) -> None:
    if kind == "garbage":
        path.write_bytes(os.urandom(64 * 1024))
    elif kind == "text":
        path.write_text("not a database\n" * 1000)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "wal-garbage":
        Path(f"{path}-wal").write_bytes(os.urandom(32 * 1024))
    else:
        with closing(sqlite3.connect(path)) as db, db:
            if kind.startswith("page-rows"):
                # Seeded garbage: pickle fails on it with UnpicklingError (seed 0, which
                # requests-cache catches), OverflowError (43) or MemoryError (454): those it
                # does not catch, and unpickling garbage has crashed the interpreter (below).
                seed = int(kind.rpartition("-")[2]) if kind[-1].isdigit() else 0
                garbage = random.Random(seed).randbytes(200)
                db.execute("update responses set value = ?", (garbage,))
                db.execute("delete from mihu_frames_loads")
            elif kind == "stored-load-body":  # the stored load's Arrow file
                for stored in Path(f"{path}.loads").glob("*.arrow"):
                    stored.write_bytes(os.urandom(stored.stat().st_size))
            elif kind == "stored-load-meta":
                db.execute("update mihu_frames_loads set meta = 'not json'")
            elif kind == "tables-dropped":
                db.execute("drop table responses")
                db.execute("drop table mihu_frames_loads")


def _wait_for_stored_load(cache: Path) -> None:
    """Wait until the load is stored (on a background thread) and every connection to the
    file is closed (the write-ahead log is folded back and removed), so damage is seen."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(cache)) as db:
            stored = db.execute("select count(*) from mihu_frames_loads").fetchone()[0]
        if stored and not Path(f"{cache}-wal").exists():
            return
        time.sleep(0.01)
    raise AssertionError("the load was never stored, or a connection to the cache stays open")


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "text",
        "empty",
        pytest.param("directory"),
        "wal-garbage",
        "page-rows",
        "stored-load-body",
        "stored-load-meta",
        "tables-dropped",
    ],
)
def test_damaged_cache_is_rebuilt_or_a_clear_error(tmp_path, kind):
    cache = tmp_path / "cache.sqlite"
    with Simulator(seed=47, sizes=[120, 3]) as sim:
        conversations = list(sim.conversation_uuids)
        with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
            client.sessions(conversations, progress=False)
        _wait_for_stored_load(cache)  # the load is stored on a background thread
        _corrupt(kind, cache)
        try:
            with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
                df = client.sessions(conversations, progress=False)
        except INTERNAL as error:
            pytest.fail(f"{kind}: a traceback from internals: {type(error).__module__}.{error!r}")
        except Exception as error:
            # a clear error says which file is wrong
            assert str(cache) in str(error), f"{kind}: {error!r} does not name the cache file"
            print(f"\n{kind}: clear error {type(error).__name__}: {error}")
            return
        truth = [s for c in conversations for s in sim.ground_truth(c)]
    assert_matches_truth(df, truth)
    print(f"\n{kind}: rebuilt; the load is correct")


_DAMAGED = """
import sys
sys.path.insert(0, "tests")
from pathlib import Path
import mihu_frames as mf
from mihu_frames import snapshots
from mihu_frames.simulator import Simulator
from conftest import assert_matches_truth
from test_crash import _corrupt, _wait_for_stored_load
kind, cache = sys.argv[1], Path(sys.argv[2])
with Simulator(seed=47, sizes=[120, 3]) as sim:
    conversations = list(sim.conversation_uuids)
    with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
        client.sessions(conversations, progress=False)
    _wait_for_stored_load(cache)
    _corrupt(kind, cache)
    try:
        with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
            df = client.sessions(conversations, progress=False)
    except Exception as error:
        clear = str(cache) in str(error)
        print("clear-error" if clear else "unclear-error", type(error).__name__, error)
    else:
        assert_matches_truth(df, [s for c in conversations for s in sim.ground_truth(c)])
        print("rebuilt")
"""


@pytest.mark.parametrize("kind", ["page-rows-43", "page-rows-454"])
def test_garbage_page_rows_are_rebuilt_in_a_subprocess(tmp_path, kind):
    child = spawn(_DAMAGED, kind, str(tmp_path / "cache.sqlite"))
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, f"exit {child.returncode}: {err[-2000:]}"
    assert out.split()[:1] in (["rebuilt"], ["clear-error"]), out + err[-2000:]


def test_cache_locked_for_a_moment_waits_then_loads(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with Simulator(seed=53, sizes=[120]) as sim:
        with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
            client.sessions(sim.conversation_uuids, progress=False)
        holder = sqlite3.connect(cache, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            started = time.monotonic()
            with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
                df = client.sessions(sim.conversation_uuids, refresh=True, progress=False)
            waited = time.monotonic() - started
        finally:
            release.join()
            holder.close()
        assert_matches_truth(df, sim.ground_truth(sim.conversation_uuids[0]))
    assert waited >= 1.0
    print(f"\nlocked for 1.5 s: the load waited {waited:.1f} s, then completed")


_LOCKED = """
import sys, time
import mihu_frames as mf
url, token, cache, conversation = sys.argv[1:]
started = time.monotonic()
try:
    with mf.MihuClient(url, token=token, cache=cache, timeout=2) as client:
        client.sessions(conversation, progress=False)
    print("loaded", round(time.monotonic() - started, 1))
except Exception as error:
    print("error", type(error).__module__, type(error).__name__, str(error))
"""


def test_cache_locked_for_good_gives_a_clear_error_not_a_hang(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with Simulator(seed=53, sizes=[120]) as sim:
        with mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client:
            client.sessions(sim.conversation_uuids, progress=False)
        holder = sqlite3.connect(cache, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        child = spawn(_LOCKED, sim.base_url, sim.token, str(cache), sim.conversation_uuids[0])
        try:
            out, err = child.communicate(timeout=12)
        except subprocess.TimeoutExpired:
            kill9(child)
            pytest.fail("a load on a locked cache file still hangs after 12 s (timeout=2)")
        finally:
            holder.close()
    words = out.split()
    assert words[:1] == ["error"], (out, err)
    assert words[1] != "sqlite3" and str(cache) in out and "lock" in out.lower()
