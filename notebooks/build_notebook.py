"""Write ``sessions_analysis.ipynb`` from the cells below and execute it in place.

Run ``python notebooks/build_notebook.py`` after changing a cell: the committed notebook keeps
its outputs (so its plots show when the repository is browsed), and the tests execute it again.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
PATH = HERE / "sessions_analysis.ipynb"

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """# Mihu AI sessions: durations, activity and snapshots

This notebook is the tour: load every session of several conversations into one typed
DataFrame, look at how long sessions last (per conversation, agent and channel), when the
contact centre is busy and how many sessions run at once, and keep the data as a Delta Lake
snapshot that DuckDB queries directly.

It talks to the real API when `MIHU_BASE_URL` (or `MIHU_SUBDOMAIN`), `MIHU_API_TOKEN` and
`MIHU_CONVERSATIONS` (comma-separated UUIDs) are set; otherwise it starts the built-in
simulator, a real HTTP server on 127.0.0.1 with synthetic data, so it runs anywhere.""",
    ),
    (
        "code",
        """import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import mihu_frames as mf

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 12)

live = (
    (os.environ.get("MIHU_BASE_URL") or os.environ.get("MIHU_SUBDOMAIN"))
    and os.environ.get("MIHU_API_TOKEN")
    and os.environ.get("MIHU_CONVERSATIONS")
)
if live:
    client = mf.MihuClient()  # address and token from the environment
    conversations = os.environ["MIHU_CONVERSATIONS"].split(",")
else:
    from mihu_frames.simulator import Simulator

    sim = Simulator(seed=42, sizes=[40, 180, 420, 950, 1600], latency=0.005).start()
    workdir = tempfile.mkdtemp(prefix="mihu_nb_")
    client = mf.MihuClient(sim.base_url, token=sim.token, cache=f"{workdir}/cache.sqlite")
    conversations = sim.conversation_uuids
client""",
    ),
    (
        "md",
        """## Load

One call loads every page of every conversation (first pages, then all later pages
concurrently), here once per status value so each row carries its status (the API does not
send it otherwise: without `status=` the column says `untagged`). The bar counts pages.
`df.attrs["mihu_frames"]` records what the load cost.""",
    ),
    (
        "code",
        """df = client.sessions(conversations, status="all", progress=True)
print(f"{len(df):,} sessions in {df['conversation_uuid'].nunique()} conversations")
{k: v for k, v in df.attrs["mihu_frames"].items() if k not in ("conversations", "base_url")}""",
    ),
    ("code", """df.dtypes"""),
    (
        "code",
        """columns = ["conversation_uuid", "status", "started_at", "duration", "contact_name"]
df[[*columns, "task_count"]].head()""",
    ),
    (
        "md",
        """Loading the same conversations again costs no request: the pages (and the decoded
result) come from the cache.""",
    ),
    (
        "code",
        """again = client.sessions(conversations, status="all")
record = again.attrs["mihu_frames"]
print(f"reload: {record['requests']} requests, {record['cache_hits']} pages from the cache")
print(f"reload equal to the first load: {again.equals(df)}")""",
    ),
    (
        "md",
        """## How long do sessions last?

Durations are computed over ended sessions; open ones are counted separately. The tables show
durations rounded to the second and shares as percentages; the values underneath stay exact.""",
    ),
    ("code", """print(mf.summary_text(df, tz="Europe/Istanbul"))"""),
    ("code", """mf.session_stats(df)"""),
    ("code", """mf.session_stats(df, by="conversation_uuid")"""),
    (
        "code",
        """by_agent = mf.session_stats(df, by="agent_uuid")
by_agent.sort_values("sessions", ascending=False).head(8)""",
    ),
    (
        "code",
        """fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
mf.plot_durations(df, ax=axes[0])
mf.plot_durations(df, by="status", kind="box", ax=axes[1])
axes[0].set_title("Session durations (ended sessions)")
fig.tight_layout()""",
    ),
    (
        "md",
        """## When are we busy?

`activity` sweeps start and end events exactly: sessions started and ended per bucket,
sessions overlapping the bucket, the peak number running at one instant, and the busy time
inside the bucket. Buckets are in the time zone you ask for (daylight-saving safe) and follow
pandas' `resample` (`"W"`: Monday to Sunday weeks labelled by their Sunday). The last bucket,
still under way when the data was fetched, is marked in the plot.""",
    ),
    (
        "code",
        """weekly = mf.activity(df, freq="W", tz="Europe/Istanbul")
weekly.tail(8).pipe(mf.format_stats)  # shown rounded; `weekly` keeps the exact values""",
    ),
    (
        "code",
        """fig, ax = plt.subplots(figsize=(13, 4))
mf.plot_activity(weekly, ax=ax)
fig.tight_layout()""",
    ),
    (
        "code",
        """profile = mf.hourly_profile(df, tz="Europe/Istanbul")
fig, ax = plt.subplots(figsize=(13, 4))
mf.plot_hourly(profile, ax=ax)
fig.tight_layout()""",
    ),
    ("md", """## Evaluation, summaries and tasks"""),
    (
        "code",
        """ended = df[~df["is_open"]]
pd.DataFrame(
    {
        "median time to evaluation": [mf.format_duration(ended["time_to_evaluation"].median())],
        "median time to summary": [mf.format_duration(ended["time_to_summary"].median())],
        "evaluated share": [f"{ended['evaluated_at'].notna().mean():.1%}"],
        "summarized share": [f"{ended['summary_generated_at'].notna().mean():.1%}"],
    }
)""",
    ),
    (
        "code",
        """tasks = mf.explode_tasks(df)
print(f"{len(tasks):,} (session, task) pairs; {tasks['task_uuid'].nunique():,} distinct tasks")
tasks.head()""",
    ),
    (
        "md",
        """## Keep a snapshot, query it with DuckDB

A snapshot root holds two Delta Lake tables: `latest/` is the latest state, exactly one row
per session, partitioned by the month a session was created; `versions/` keeps the versions
it replaced, so every version ever fetched is kept, each row written once. Each write is one
atomic commit, so every reader sees a whole state, and earlier states stay readable
(`as_of=`). Files are owner-only because contacts are personal data. Any
Delta reader takes `latest/` as it is: no de-duplication of your own.""",
    ),
    (
        "code",
        """root = tempfile.mkdtemp(prefix="mihu_snapshots_")
path = mf.write_snapshot(df, root=root)
record = mf.snapshot_metadata(path)
print(f"{path.relative_to(root)}: version {record['version']}, {record['rows_new']:,} new")
back = mf.read_snapshots(root)
print(f"snapshot round trip equal: {back.equals(df)}")
print(f"writing the same data again writes: {mf.write_snapshot(df, root=root)}")
mf.write_snapshot(df.head(3).assign(summary="edited"), root=root)  # a later write
before = mf.read_snapshots(root, as_of=record["version"])  # time travel
edits = [(f["summary"] == "edited").sum() for f in (mf.read_snapshots(root), before)]
print(f"edited now: {edits[0]}; as of version {record['version']}: {edits[1]}")
sorted({str(p.relative_to(root).parent) for p in Path(root).rglob("*.parquet")})[:4]""",
    ),
    (
        "code",
        """import duckdb
from deltalake import DeltaTable

con = duckdb.connect()
latest = DeltaTable(f"{root}/latest").to_pyarrow_dataset()  # or delta_scan('{root}/latest')
con.execute(\"\"\"
    select created_month,
           count(*) as sessions,
           count(distinct uuid) as distinct_sessions,
           round(median(duration) / 60e6, 1) as median_minutes
    from latest
    group by created_month
    order by created_month desc
    limit 6
\"\"\").df()""",
    ),
    (
        "md",
        """The statistics also compute **on the root itself**, over its files (DuckDB), without
loading the sessions into pandas: the same frames, so an account too big for memory gets the
same numbers. Polars, DuckDB and Spark DataFrames are taken the same way.""",
    ),
    (
        "code",
        """on_root = mf.session_stats(root, by="conversation_uuid")
assert on_root.equals(mf.session_stats(df, by="conversation_uuid"))
mf.activity(root, freq="W", tz="Europe/Istanbul").tail(3)""",
    ),
    (
        "md",
        """## The whole account

Instead of pasting conversation ids: list the account's conversations (filters go to the
server), pick in pandas, and load their sessions; or load `"all"` of them. A root synced with
`"all"` lists the account again at each sync and loads new conversations in full.""",
    ),
    (
        "code",
        """convs = client.conversations()
print(f"{len(convs)} conversations, {convs['sessions_count'].sum():,} sessions")
convs[["uuid", "channel", "status", "sessions_count", "last_message_at"]].head()""",
    ),
    (
        "code",
        """busy = convs[convs["sessions_count"] >= 400]
subset = client.sessions(busy)
everything = client.sessions("all")
print(f"{len(busy)} busy conversations: {len(subset):,} sessions; all: {len(everything):,}")""",
    ),
    (
        "code",
        """client.close()
if not live:
    sim.stop()""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook with the cells above and no outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in CELLS:
        cell = (
            nbformat.v4.new_markdown_cell(source)
            if kind == "md"
            else nbformat.v4.new_code_cell(source)
        )
        nb.cells.append(cell)
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 300) -> nbformat.NotebookNode:
    """Run every cell top to bottom (raises on the first failing cell)."""
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
    ).execute()
    return nb


if __name__ == "__main__":
    notebook = execute(build())
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, PATH)
    print(f"wrote {PATH}")
