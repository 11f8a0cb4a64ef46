"""The store's file-level parts: finding the files that hold sessions (a 64-bit key per uuid
first, strings compared only where keys match) and writing them."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

import mihu_frames as mf
from mihu_frames.store.files import _keyed, is_in

# Equal in the bytes the key is made of (0-7 and 9-16), different after them.
SAME_KEY = [
    "0badcafe-0000-4000-8000-000000000001",
    "0badcafe-0000-4000-8000-000000000002",
    "0badcafe-0000-4000-9999-000000000003",
]


def _found(haystacks: list[list[str | None]], needles: list[str | None]) -> list[bool]:
    keyed = [_keyed(pa.chunked_array([pa.array(h, pa.string())])) for h in haystacks]
    return is_in(keyed, _keyed(pa.chunked_array([pa.array(needles, pa.string())]))).tolist()


def test_values_whose_keys_collide_are_told_apart_by_their_strings():
    assert _keyed(pa.array(SAME_KEY))[1] is not None
    assert len(set(_keyed(pa.array(SAME_KEY))[1].tolist())) == 1  # one key for all three
    assert _found([SAME_KEY[:1], SAME_KEY[1:]], [SAME_KEY[2]]) == [False, False, True]
    assert _found([SAME_KEY], ["0badcafe-0000-4000-8000-00000000000f"]) == [False] * 3


def test_values_that_are_not_uuids_are_compared_as_strings():
    short = ["a", "b", "0badcafe"]
    assert _keyed(pa.array(short))[1] is None
    assert _found([short, SAME_KEY[:1]], ["b", SAME_KEY[0]]) == [False, True, False, True]
    assert _found([[None, SAME_KEY[0]]], [SAME_KEY[0]]) == [False, True]  # a null: strings
    assert _found([[], SAME_KEY[:1]], [SAME_KEY[0]]) == [True]


def test_a_session_whose_key_collides_with_one_held_is_new(tmp_path):
    root = tmp_path / "root"
    frame = mf.sessions_frame(
        [
            {"uuid": SAME_KEY[0], "conversation_uuid": "c1", "updated_at": "2026-01-01T00:00:00Z"},
            {"uuid": SAME_KEY[1], "conversation_uuid": "c1", "updated_at": "2026-01-01T00:00:00Z"},
        ],
        fetched_at="2026-01-02T00:00:00Z",
    )
    mf.write_snapshot(frame, root)
    other = mf.sessions_frame(
        [{"uuid": SAME_KEY[2], "conversation_uuid": "c1", "updated_at": "2026-01-03T00:00:00Z"}],
        fetched_at="2026-01-04T00:00:00Z",
    )
    path = mf.write_snapshot(other, root)
    meta = mf.snapshot_metadata(path)
    assert (meta["rows_new"], meta["rows_changed"]) == (1, 0)
    latest = mf.read_snapshots(root)
    assert list(latest["uuid"]) == SAME_KEY
    assert len(mf.read_snapshots(root, latest=False)) == 3
    pd.testing.assert_series_equal(
        latest["updated_at"].iloc[:2], frame["updated_at"], check_names=False
    )
