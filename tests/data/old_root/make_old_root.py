"""Write ``snapshots/``: a snapshot root in the layout of mihu_frames 0.x before issue 10.

Run once, with the library as it was at commit 3a528ca (before the latest-state/history
layout), from the repository root::

    .venv/bin/python tests/data/old_root/make_old_root.py

It is kept as the record of how the committed files were made; with today's library it would
write a root in the new layout. What it writes, against a simulator of three conversations:

1. ``load_sessions(status="all")`` then ``write_snapshot``: every row tagged.
2. Sessions touched and added, then ``sync_snapshots(root, convs)`` without filters, as the
   README showed: the changed rows lost their ``status`` tag (the bug of issue 10).
3. More sessions touched, then ``sync_snapshots(root, convs, status="all")``: tagged again.
4. A copy of eight held rows with another ``summary`` and a ``fetched_at`` one day earlier,
   written with ``write_snapshot``: an older fetch in another ``fetched_date=`` partition.
5. A hidden temporary file like the ones a killed writer leaves (not a whole snapshot).

``truth.json`` holds the simulator's sessions after step 3 (as served) and their status;
``expected_latest.parquet`` and ``expected_history.parquet`` hold what ``read_snapshots``
returned for this root then (latest state, and every row with its ``snapshot_id``), written
with plain pyarrow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import mihu_frames as mf
from mihu_frames.simulator import Simulator

HERE = Path(__file__).resolve().parent
SEED = 57
SIZES = (3, 40, 120)


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
            sim.add_sessions(convs[2], 2)
            mf.sync_snapshots(root, convs, client=client, progress=False)
            sim.touch_sessions(convs[2], 3)
            sim.touch_sessions(convs[0], 1)
            mf.sync_snapshots(root, convs, client=client, status="all", progress=False)
        truth = sim.ground_truth()
        tags = sim.tags()
    older = mf.read_snapshots(root, conversations=convs[2]).head(8).copy()
    older["summary"] = "an older fetch, edited"
    older["fetched_at"] = older["fetched_at"] - pd.Timedelta(days=1)
    mf.write_snapshot(older, root)
    partition = next((root / "sessions").glob("fetched_date=*"))
    leftover = partition / f".{mf.snapshots.new_snapshot_id()}.parquet.0badc0de.tmp"
    leftover.write_bytes(b"PAR1 part of a snapshot a killed writer left")

    (HERE / "truth.json").write_text(
        json.dumps(
            {
                "seed": SEED,
                "sizes": SIZES,
                "sessions": truth,
                "status": {u: tags[u][0] for u in tags},
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n"
    )
    for name, latest in (("expected_latest", True), ("expected_history", False)):
        df = mf.read_snapshots(root, latest=latest)
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, HERE / f"{name}.parquet")


if __name__ == "__main__":
    main()
