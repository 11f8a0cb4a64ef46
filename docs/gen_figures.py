"""Draw the figures of the statistics page from the simulator's data: ``make docs`` runs it.

The figures are committed (docs/figures/*.png, small: 72 dpi) so the site builds without this
step; run it again when a plot changes. The data is the one the statistics page's examples
load: ``Simulator(seed=42, sizes=[40, 180, 420, 950, 1600])``, tagged by status.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

import mihu_frames as mf
from mihu_frames.simulator import Simulator

FIGURES = Path(__file__).resolve().parent / "figures"
SIZES = [40, 180, 420, 950, 1600]
TZ = "Europe/Istanbul"


def _save(fig: plt.Figure, name: str) -> None:
    fig.tight_layout()
    fig.savefig(FIGURES / name, dpi=72, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    """Load the simulator's sessions once and write the four figures."""
    FIGURES.mkdir(exist_ok=True)
    # the figures' titles say how many zero-length sessions a log axis leaves out
    warnings.filterwarnings("ignore", message=".*zero length not shown")
    with Simulator(seed=42, sizes=SIZES) as sim, tempfile.TemporaryDirectory() as tmp:
        client = mf.MihuClient(sim.base_url, token=sim.token, cache=Path(tmp) / "cache.sqlite")
        with client:
            df = client.sessions(sim.conversation_uuids, status="all", progress=False)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    mf.plot_durations(df, ax=ax)
    _save(fig, "durations.png")

    fig, ax = plt.subplots(figsize=(8, 3.5))
    mf.plot_durations(df, by="status", kind="box", ax=ax)
    _save(fig, "durations_by_status.png")

    fig, ax = plt.subplots(figsize=(10, 3.5))
    mf.plot_activity(mf.activity(df, freq="W", tz=TZ), ax=ax)
    _save(fig, "activity_weekly.png")

    fig, ax = plt.subplots(figsize=(10, 3.5))
    mf.plot_hourly(mf.hourly_profile(df, tz=TZ), ax=ax)
    _save(fig, "hourly.png")


if __name__ == "__main__":
    main()
