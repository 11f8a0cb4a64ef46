"""Write ``snapshots/``: a snapshot root in layout 3 (two Delta Lake tables, ``versions/``
holding every version, the current ones too), as mihu_frames wrote it before layout 4.

Run once, with the library as it was at commit 306fc84, from the repository root::

    git worktree add /tmp/306fc84 306fc84
    PYTHONPATH=/tmp/306fc84 .venv/bin/python tests/data/layout3_root/make_layout3_root.py

What it writes, against a simulator of three conversations: a tagged load (``status="all"``);
sessions touched and added, then a sync (the recorded filters reused); an older fetch of five
sessions written late (history only). No compaction: ``versions/`` keeps a copy of every
current version. ``expected_latest.parquet`` and ``expected_history.parquet`` hold what
``read_snapshots`` returned for this root then, written with plain pyarrow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import mihu_frames as mf
from mihu_frames.simulator import Simulator

HERE = Path(__file__).resolve().parent
SEED = 67
SIZES = (4, 30, 60)


def main() -> None:
    root = HERE / "snapshots"
    shutil.rmtree(root, ignore_errors=True)
    with Simulator(seed=SEED, sizes=SIZES, retry_after=0) as sim:
        convs = sim.conversation_uuids
        with mf.MihuClient(sim.base_url, token=sim.token, cache=None) as client:
            tagged = client.sessions(convs, status="all", progress=False)
            mf.write_snapshot(tagged, root)
            sim.touch_sessions(convs[1], 4)
            sim.touch_sessions(convs[2], 6)
            sim.add_sessions(convs[2], 3)
            mf.sync_snapshots(root, convs, client=client, progress=False)
    older = mf.read_snapshots(root, conversations=convs[2]).head(5).copy()
    older["summary"] = "an older fetch, edited"
    older["fetched_at"] = older["fetched_at"] - pd.Timedelta(days=1)
    mf.write_snapshot(older, root)
    for name, latest in (("expected_latest", True), ("expected_history", False)):
        df = mf.read_snapshots(root, latest=latest)
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table.replace_schema_metadata(None), HERE / f"{name}.parquet")


if __name__ == "__main__":
    main()
