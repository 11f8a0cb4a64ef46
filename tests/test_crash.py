"""Crash safety (issue 5, part 3; issue 19): kill -9, concurrent writers, corrupted and locked
caches.

Child processes run ``sys.executable -c ...`` and are killed with ``SIGKILL`` in the middle of
``write_snapshot``, of a compaction, of a sync and of a cached load. Afterwards the root holds a
committed state (every earlier write whole, the killed one whole or absent: never a mix, for
mihu_frames, pyarrow, DuckDB and Polars), and the next run writes on top of what it left.
Two processes writing or syncing into one root at once both land, with no session twice. The
data files a killed writer left uncommitted (personal data) are removed by compaction once a
day old. A corrupted or locked cache file gives a clear error or is rebuilt: never a traceback
from sqlite or pyarrow internals.
"""

from __future__ import annotations

import json
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
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_matches_truth
from deltalake import DeltaTable

import mihu_frames as mf
from mihu_frames.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]
CONVERSATION = "c0000000-0000-4000-8000-000000000000"
FETCHED = "2026-03-01T00:00:00Z"
ROWS = 10_000  # a snapshot of ~2 MB: long enough to be killed while it is written

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


def committed(root: Path) -> set[str]:
    """Every data file the tables' versions reference (what a reader may ever open)."""
    files: set[str] = set()
    for name in ("latest", "versions"):
        table = DeltaTable(root / name)
        for version in range(table.version() + 1):
            files.update(DeltaTable(root / name, version=version).file_uris())
    return files


def assert_a_committed_state(root: Path) -> pd.DataFrame:
    """Every file the tables reference is whole; mihu_frames, pyarrow, DuckDB and Polars see the
    same rows, one per session in the latest state. Returns the history."""
    for path in committed(root):
        if Path(path).exists():  # a version compaction replaced keeps its files
            pq.read_table(path)  # raises on a partial file
    df = mf.read_snapshots(root, latest=False)
    latest = mf.read_snapshots(root, columns=["uuid"])
    assert latest["uuid"].is_unique and set(latest["uuid"]) <= set(df["uuid"])
    dataset = DeltaTable(root / "latest").to_pyarrow_dataset()
    assert dataset.count_rows() == len(latest)
    con = duckdb.connect()
    con.register("latest", dataset)
    counts = con.execute("select count(*), count(distinct uuid) from latest")
    assert counts.fetchone() == (len(latest), len(latest))
    # every version, as another engine reads it: versions/ and latest/, each version once
    superseded = pl.scan_delta(str(root / "versions")).drop("fetched_month")
    current = pl.scan_delta(str(root / "latest")).drop("created_month")
    every = pl.concat([superseded, current]).unique(["uuid", "snapshot_id", "fetched_at"])
    assert every.select(pl.len()).collect().item() == len(df)
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
    print("done", i, mf.snapshot_metadata(path)["snapshot_id"], flush=True)
""".replace("{conversation}", CONVERSATION).replace("{fetched}", FETCHED)


def _snapshot_numbers(df: pd.DataFrame) -> dict[str, set[int]]:
    """snapshot_id -> the writer's iteration numbers its uuids carry."""
    return {
        sid: {int(u[:8], 16) for u in group["uuid"]}
        for sid, group in df.groupby("snapshot_id", observed=True)
    }


def _numbers(uuids: pd.Series) -> dict[int, int]:
    """The writer's iteration number -> how many of its sessions."""
    return pd.Series([int(u[:8], 16) for u in uuids]).value_counts().to_dict()


@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_kill_during_write_snapshot_leaves_the_state_before_or_after(tmp_path, delay):
    root = tmp_path / "snaps"
    whole: dict[str, int] = {}  # snapshot id -> the writer's iteration number
    for round_ in range(2):  # the second round writes on top of the first one's leftovers
        first = round_ * 100
        child = spawn(_WRITER, str(root), str(first), "50", str(ROWS))
        for i in range(first, first + 2):
            line = read_until(child, lambda s, i=i: s.startswith(f"done {i} "), 120)
            whole[line.split(" ", 2)[2]] = i
        starting = f"start {first + 2}"
        read_until(child, lambda s, starting=starting: s == starting, 60)
        time.sleep(delay)
        kill9(child)
        killed: int | None = first + 2  # the write it was in when it died (None: between two)
        assert child.stdout is not None
        for line in child.stdout.read().splitlines():  # what it said before it died
            if line.startswith("done "):  # writes finish faster than the delay, under load
                _, number, sid = line.split(" ", 2)
                whole[sid] = int(number)
                killed = None
            elif line.startswith("start "):
                killed = int(line.split()[1])

        df = assert_a_committed_state(root)
        numbers = _snapshot_numbers(df)
        # every completed write is there, whole; besides, at most the one killed, whole
        assert set(whole) <= set(numbers)
        extra = set(numbers) - set(whole)
        assert len(extra) <= 1 and all(numbers[s] == {killed} for s in extra)
        whole.update({s: killed for s in extra})
        for sid, i in whole.items():
            assert numbers[sid] == {i}
            assert (df["snapshot_id"] == sid).sum() == ROWS
        # the latest state holds every completed write whole; the killed one whole or not at all
        latest = _numbers(mf.read_snapshots(root, columns=["uuid"])["uuid"])
        assert set(latest.values()) <= {ROWS}
        assert set(whole.values()) - {killed} <= set(latest)
        assert (killed is not None and killed in latest) == bool(extra)
        print(f"\nround {round_}: killed {delay}s into a write; it landed: {killed in latest}")

    # the next run writes its own
    edit = mf.read_snapshots(root).head(10).assign(summary="the next run")
    path = mf.write_snapshot(edit, root)
    assert mf.snapshot_metadata(path)["rows"] == 10
    assert len(mf.read_snapshots(root)) == ROWS * len(whole)
    df = assert_a_committed_state(root)
    for sid, i in whole.items():
        assert (df["snapshot_id"] == sid).sum() == ROWS and _snapshot_numbers(df)[sid] == {i}

    # what killed writers left uncommitted is invisible, and compaction removes it once a day old
    month = next((root / "latest").glob("created_month=*"))
    left = month / "part-00000-killed-c000.snappy.parquet"
    left.write_bytes(next(root.rglob("*.parquet")).read_bytes())  # as a killed writer leaves
    young = root / "versions" / "part-00000-writing-c000.snappy.parquet"
    young.write_bytes(b"PAR1 a live writer's file")
    on_disk = {str(p) for p in root.rglob("*.parquet")} - {str(young)}
    orphans = on_disk - committed(root)
    assert str(left) in orphans
    old = time.time() - 2 * 86_400
    for path in orphans:
        os.utime(path, (old, old))
    report = mf.compact_snapshots(root)
    assert not [p for p in orphans if Path(p).exists()]
    assert young.exists()  # too young: perhaps a live writer's
    assert len(report.files_vacuumed) >= len(orphans)
    for version in range(DeltaTable(root / "latest").version() + 1):
        mf.read_snapshots(root, as_of=version)  # every state still reads
    assert_a_committed_state(root)


_COMPACTOR = """
import sys
import mihu_frames as mf
print("compacting", flush=True)
mf.compact_snapshots(sys.argv[1])
print("compacted", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.2])
def test_kill_during_a_compaction_leaves_the_state_before_or_after(tmp_path, delay):
    root = tmp_path / "snaps"
    writer = spawn(_WRITER, str(root), "0", "6", "2000")
    _, err = writer.communicate(timeout=240)
    assert writer.returncode == 0, err
    history = assert_a_committed_state(root).sort_values(["snapshot_id", "uuid"])
    latest = mf.read_snapshots(root)
    child = spawn(_COMPACTOR, str(root))
    read_until(child, lambda s: s == "compacting", 60)
    time.sleep(delay)
    if child.poll() is None:
        kill9(child)
    after = assert_a_committed_state(root).sort_values(["snapshot_id", "uuid"])
    pd.testing.assert_frame_equal(after.reset_index(drop=True), history.reset_index(drop=True))
    pd.testing.assert_frame_equal(mf.read_snapshots(root), latest)
    mf.compact_snapshots(root)  # the next one finishes the work
    pd.testing.assert_frame_equal(mf.read_snapshots(root), latest)
    assert len(DeltaTable(root / "latest").file_uris()) == 1  # six writes, one month
    assert DeltaTable(root / "versions").file_uris() == []  # new sessions: nothing superseded


def test_two_processes_writing_into_one_root_both_land(tmp_path):
    root = tmp_path / "shared-root"  # does not exist yet: both create the tables at once
    go = tmp_path / "go"
    writers = [spawn(_WRITER, str(root), str(first), "8", "2000", str(go)) for first in (0, 50)]
    time.sleep(1.0)  # both import mihu_frames, then wait for the go file
    go.touch()
    outputs = [w.communicate(timeout=240) for w in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert out.count("done ") == 8
    df = assert_a_committed_state(root)
    numbers = _snapshot_numbers(df)
    assert len(numbers) == 16
    assert sorted(n for s in numbers.values() for n in s) == [*range(8), *range(50, 58)]
    latest = mf.read_snapshots(root)
    assert len(latest) == 16 * 2000 and latest["uuid"].is_unique


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
                if when == "at-write" and set(root.rglob("*.parquet")) - set(before):
                    break
                time.sleep(0.0005)
            finished = child.poll() is not None
            if not finished:
                kill9(child)
            outcomes.append(f"{when}: {'finished first' if finished else 'killed'}")

            # earlier snapshots are untouched and readable; nothing partial is read
            assert all(path.exists() for path in before)
            assert_a_committed_state(root)
            held = mf.read_snapshots(root)
            assert held["uuid"].is_unique
            assert set(first["uuid"]) <= set(held["uuid"])

        # the next sync completes, and the latest state is the server's, row for row
        last = mf.sync_snapshots(root, conversations, progress=False, **options)
        assert_matches_truth(_by_uuid(last), _sorted_truth(sim, conversations))
        assert_matches_truth(_by_uuid(mf.read_snapshots(root)), _sorted_truth(sim, conversations))
    print("\nsync kills: " + "; ".join(outcomes))


def test_two_processes_syncing_one_root_both_succeed_and_equal_the_server(tmp_path):
    root = tmp_path / "snaps"
    with Simulator(seed=43, sizes=[120] * 6, latency=0.01) as sim:
        conversations = list(sim.conversation_uuids)
        options = {"base_url": sim.base_url, "token": sim.token, "cache": None}
        mf.sync_snapshots(root, conversations[:3], progress=False, **options)
        for c in conversations[:3]:
            sim.add_sessions(c, 20)
            sim.touch_sessions(c, 20)
        children = [
            spawn(
                _SYNC,
                str(root),
                sim.base_url,
                sim.token,
                str(tmp_path / f"c{i}.sqlite"),
                *conversations,
            )
            for i in range(2)
        ]
        outputs = [c.communicate(timeout=240) for c in children]
        for child, (out, err) in zip(children, outputs, strict=True):
            assert child.returncode == 0, err
            assert "synced" in out
        latest = mf.read_snapshots(root)
        assert latest["uuid"].is_unique
        assert_matches_truth(_by_uuid(latest), _sorted_truth(sim, conversations))
        assert_a_committed_state(root)


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
