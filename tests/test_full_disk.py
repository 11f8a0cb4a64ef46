"""A full disk interrupts a write: a clear error, and nothing lost.

The root lives on a real tmpfs of 4 MB; a filler file takes all of it but a few KB, so the
write genuinely fails with ENOSPC. The write must raise :class:`mihu_frames.SnapshotStoreError`
saying the disk is full, leave the latest state as it was (row for row, same Delta version,
still read by DuckDB and Polars), and the next write, once the filler is gone, must give exactly
the server's sessions with each version once in history. A failed write closes and removes the
files it began. One test finds, by bisection on the space left, the point where the disk fills
between the history's commit and the latest state's.
"""

from __future__ import annotations

import errno
import gc
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from deltalake import DeltaTable

import mihu_frames as mf
from mihu_frames.simulator import Simulator

SIZES = (3, 200, 400)
#: What the filler leaves free when nothing a write needs may fit.
NOTHING_FITS = 4 * 1024
PAGE = 4 * 1024  # tmpfs allocates whole pages


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=29, sizes=SIZES, retry_after=0) as server:
        yield server


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB tmpfs, unmounted at teardown (also when the test fails)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
            check=True,
            capture_output=True,
            text=True,
        )
    except (subprocess.CalledProcessError, PermissionError, FileNotFoundError) as error:
        detail = getattr(error, "stderr", None) or error
        pytest.skip(f"mounting a tmpfs is not permitted here (needs CAP_SYS_ADMIN): {detail}")
    try:
        yield mount_point
    finally:
        gc.collect()  # files a failed write left open are closed when its error is collected
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True)
        if unmounted.returncode != 0:  # still busy: a failing test's traceback holds them
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def _fill(disk: Path, leave: int) -> Path:
    """A filler file taking all of ``disk`` but ``leave`` bytes (checked by ``statvfs``)."""
    stats = os.statvfs(disk)
    size = stats.f_bavail * stats.f_frsize - leave
    assert size > 0, f"the disk has only {stats.f_bavail * stats.f_frsize} bytes free"
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb") as file:
        for _ in range(size // len(chunk)):
            file.write(chunk)
        file.write(b"\0" * (size % len(chunk)))
    stats = os.statvfs(disk)
    assert stats.f_bavail * stats.f_frsize <= leave
    return filler


def _open_files(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(f"{folder}/"):
            found.append(target)
    return sorted(found)


def _data_files(root: Path) -> set[str]:
    """Every data file in the root's folders, committed or not (the logs left out)."""
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "_delta_log" not in path.parts
    }


def _sync(root: Path, sim: Simulator, client: mf.MihuClient) -> pd.DataFrame:
    return mf.sync_snapshots(root, sim.conversation_uuids, client=client, progress=False)


def _change(sim: Simulator) -> None:
    """Changes on the server: sessions touched in every conversation, new ones in one."""
    for conversation in sim.conversation_uuids[1:]:
        sim.touch_sessions(conversation, 30)
    sim.add_sessions(sim.conversation_uuids[2], 5)


def _truth(sim: Simulator) -> dict[str, pd.Timestamp]:
    return {s["uuid"]: pd.Timestamp(s["updated_at"]).tz_convert("UTC") for s in sim.ground_truth()}


def _versions(root: Path) -> tuple[int, int]:
    """The Delta versions of ``latest/`` and ``versions/``."""
    return DeltaTable(str(root / "latest")).version(), DeltaTable(str(root / "versions")).version()


def _state(df: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """``{uuid: updated_at}`` of a frame, which holds each session once."""
    assert df["uuid"].is_unique, df["uuid"][df["uuid"].duplicated()].tolist()
    return dict(zip(df["uuid"], df["updated_at"], strict=True))


def _assert_disk_full(error: BaseException, root: Path) -> None:
    """A typed error that names the root and says, in words, that the disk is full."""
    assert isinstance(error, mf.SnapshotStoreError), (type(error).__mro__, str(error))
    message = str(error)
    assert str(root) in message, message
    assert "the disk is full" in message, message
    assert "No space left on device" in message, message  # ENOSPC, the real cause
    assert error.errno == errno.ENOSPC  # for callers that test it


def _assert_readers_see(root: Path, state: dict[str, pd.Timestamp]) -> None:
    """DuckDB (over the Arrow dataset) and Polars read ``latest/`` as exactly ``state``."""
    latest = str(root / "latest")
    con = duckdb.connect()
    try:
        con.register("latest", DeltaTable(latest).to_pyarrow_dataset())
        rows = con.execute("select uuid, updated_at from latest").fetchall()
    finally:
        con.close()
    assert len(rows) == len(state)
    assert {u: pd.Timestamp(t).tz_convert("UTC") for u, t in rows} == state
    frame = pl.scan_delta(latest).select("uuid", "updated_at").collect()
    assert frame.height == len(state)
    assert dict(zip(frame["uuid"], frame["updated_at"].to_pandas(), strict=True)) == state


def _assert_each_version_once(root: Path) -> None:
    history = mf.read_snapshots(root, latest=False, columns=["uuid", "snapshot_id"])
    twice = history[history.duplicated(["uuid", "snapshot_id"], keep=False)]
    assert twice.empty, twice


def test_a_sync_on_a_full_disk_raises_and_commits_nothing(sim, make_client, disk):
    root = disk / "root"
    client = make_client(sim)
    _sync(root, sim, client)
    before = mf.read_snapshots(root)
    history = mf.read_snapshots(root, latest=False)
    versions = _versions(root)
    _change(sim)
    filler = _fill(disk, NOTHING_FITS)

    with pytest.raises(mf.SnapshotStoreError) as raised:
        _sync(root, sim, client)

    _assert_disk_full(raised.value, root)
    assert _versions(root) == versions  # neither table committed
    pd.testing.assert_frame_equal(mf.read_snapshots(root), before)
    pd.testing.assert_frame_equal(mf.read_snapshots(root, latest=False), history)
    _assert_readers_see(root, _state(before))
    assert _state(before) != _truth(sim)  # the sync had something to write

    filler.unlink()
    df = _sync(root, sim, client)

    assert df.attrs["mihu_frames"]["rows_new"] == 5
    assert _state(df) == _truth(sim)
    assert _state(mf.read_snapshots(root)) == _truth(sim)
    assert _versions(root) == (versions[0] + 1, versions[1] + 1)
    _assert_readers_see(root, _truth(sim))
    _assert_each_version_once(root)


def test_a_failed_write_leaves_no_file_open_and_none_behind(sim, make_client, disk):
    """The error is kept, as a notebook keeps the last one (``sys.last_value``): the files
    the write had begun are closed all the same, and removed (the disk is full: their space
    is wanted back now, not at a compaction a day later)."""
    root = disk / "root"
    client = make_client(sim)
    _sync(root, sim, client)
    files = _data_files(root)
    _change(sim)
    _fill(disk, NOTHING_FITS)

    with pytest.raises(mf.SnapshotStoreError) as raised:
        _sync(root, sim, client)

    _assert_disk_full(raised.value, root)
    assert (_open_files(disk), sorted(_data_files(root) - files)) == ([], [])


def test_a_sync_that_fills_the_disk_between_its_two_commits(sim, make_client, disk, tmp_path):
    """History commits (the versions the sync supersedes, copied), the latest state does not:
    both read as before (each copy is a version the latest state still holds), and the next
    sync lands without a version twice. The space that gives this is found by bisection, each
    try on a fresh copy of the root."""
    root = disk / "root"
    client = make_client(sim)
    _sync(root, sim, client)
    before = mf.read_snapshots(root)
    history_before = mf.read_snapshots(root, latest=False)
    writes_before, history_rows = set(history_before["snapshot_id"]), len(history_before)
    versions = latest_version, history_version = _versions(root)
    pristine = tmp_path / "pristine"
    shutil.copytree(root, pristine)
    _change(sim)

    def attempt(leave: int) -> tuple[int, int, BaseException | None]:
        shutil.rmtree(root)
        shutil.copytree(pristine, root)
        filler = _fill(disk, leave)
        try:
            _sync(root, sim, client)
        except mf.SnapshotStoreError as error:
            return (*_versions(root), error)
        finally:
            filler.unlink()
        return (*_versions(root), None)

    low, high = 0, 1 << 20  # nothing fits at `low`; everything fits at `high`
    assert attempt(high)[2] is None
    outcome = None
    while high - low > PAGE:
        middle = (low + high) // 2 // PAGE * PAGE
        outcome = attempt(middle)
        if outcome[:2] == (latest_version, history_version + 1):
            break
        if outcome[2] is None:
            high = middle
        else:
            assert outcome[:2] == versions, outcome  # the one other failure: nothing committed
            _assert_disk_full(outcome[2], root)
            low = middle
    else:
        pytest.skip(f"no space left between {low} and {high} bytes fills the disk between them")

    assert outcome is not None and outcome[2] is not None
    _assert_disk_full(outcome[2], root)
    pd.testing.assert_frame_equal(mf.read_snapshots(root), before)
    _assert_readers_see(root, _state(before))
    history = mf.read_snapshots(root, latest=False)
    assert set(history["snapshot_id"]) == writes_before and len(history) == history_rows
    _assert_each_version_once(root)

    df = _sync(root, sim, client)  # the filler is gone

    assert _state(df) == _truth(sim)
    assert _state(mf.read_snapshots(root)) == _truth(sim)
    assert _versions(root)[0] == latest_version + 1
    _assert_readers_see(root, _truth(sim))
    _assert_each_version_once(root)


def test_write_snapshot_on_a_full_disk_raises_and_commits_nothing(sim, make_client, disk):
    root = disk / "root"
    client = make_client(sim)
    assert mf.write_snapshot(client.sessions(sim.conversation_uuids, progress=False), root)
    before = mf.read_snapshots(root)
    versions = _versions(root)
    _change(sim)
    changed = client.sessions(sim.conversation_uuids, progress=False, refresh=True)
    assert _state(changed) == _truth(sim) != _state(before)  # fetched anew, not from the cache
    filler = _fill(disk, NOTHING_FITS)

    with pytest.raises(mf.SnapshotStoreError) as raised:
        mf.write_snapshot(changed, root)

    _assert_disk_full(raised.value, root)
    assert _versions(root) == versions
    pd.testing.assert_frame_equal(mf.read_snapshots(root), before)
    _assert_readers_see(root, _state(before))

    filler.unlink()
    commit = mf.write_snapshot(changed, root)

    assert commit is not None and Path(commit).is_file()
    assert _state(mf.read_snapshots(root)) == _truth(sim)
    assert _versions(root) == (versions[0] + 1, versions[1] + 1)
    _assert_readers_see(root, _truth(sim))
    _assert_each_version_once(root)


def test_compaction_on_a_full_disk_raises_and_changes_nothing(sim, make_client, disk):
    root = disk / "root"
    client = make_client(sim)
    for _ in range(4):  # several small files in each table: compaction has work to do
        _change(sim)
        _sync(root, sim, client)
    before = mf.read_snapshots(root)
    history = mf.read_snapshots(root, latest=False)
    versions = _versions(root)
    assert len(DeltaTable(str(root / "versions")).file_uris()) > 1
    filler = _fill(disk, NOTHING_FITS)

    # Caught as any exception so that one run reports the whole story (the root's state and
    # the recovery); the error's type and message are asserted at the end.
    with pytest.raises(Exception) as raised:
        mf.compact_snapshots(root)

    assert _versions(root) == versions
    pd.testing.assert_frame_equal(mf.read_snapshots(root), before)
    pd.testing.assert_frame_equal(mf.read_snapshots(root, latest=False), history)
    _assert_readers_see(root, _state(before))

    filler.unlink()
    report = mf.compact_snapshots(root)

    assert report.files_after == 1 < report.files_before
    assert report.rows_after == report.rows_before == len(history)
    pd.testing.assert_frame_equal(mf.read_snapshots(root), before)
    assert _state(before) == _truth(sim)
    _assert_each_version_once(root)
    _assert_disk_full(raised.value, root)
