"""Tests for mihu_frames.plots: each plot renders into a given Axes and to a decodable PNG."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from mihu_frames import schema
from mihu_frames.plots import plot_activity, plot_durations, plot_hourly
from mihu_frames.stats import activity, hourly_profile

SECOND = pd.Timedelta(seconds=1)


def make_frame(durations_seconds: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """A sessions frame with the given durations (NaN = open), starts over four days."""
    rng = np.random.default_rng(seed)
    n = len(durations_seconds)
    t0 = pd.Timestamp("2024-03-29", tz="UTC")
    started = t0 + pd.Series(pd.to_timedelta(rng.integers(0, 4 * 86400, size=n), unit="s"))
    duration = pd.Series(pd.to_timedelta(durations_seconds, unit="s"))
    ended = started + duration
    df = pd.DataFrame(
        {
            "conversation_uuid": [f"c{i % 3}" for i in range(n)],
            "uuid": [f"s{i}" for i in range(n)],
            "status": None,
            "type": ["text" if i % 2 else "voice" for i in range(n)],
            "started_at": started,
            "ended_at": ended,
            "duration": duration,
            "is_open": duration.isna(),
            "agent_uuid": [f"a{i % 3}" for i in range(n)],
            "task_uuids": [[] for _ in range(n)],
            "task_count": 0,
            "fetched_at": ended.fillna(started + pd.Timedelta(hours=1)),
        }
    )
    for column in schema.COLUMNS:
        if column not in df.columns:
            df[column] = None
    return df[list(schema.COLUMNS)].astype(schema.pandas_dtypes())


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def save_and_decode(ax, tmp_path) -> np.ndarray:
    path = tmp_path / "plot.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.ndim == 3
    assert image.shape[0] > 100 and image.shape[1] > 100
    return image


@pytest.fixture
def wide() -> pd.DataFrame:
    """Durations from 1 s to 5 h (four orders of magnitude), plus open sessions."""
    rng = np.random.default_rng(1)
    seconds = np.exp(rng.uniform(0, np.log(5 * 3600), size=200))
    seconds[:10] = np.nan
    return make_frame(seconds)


@pytest.fixture
def narrow() -> pd.DataFrame:
    """Durations between 5 and 10 minutes."""
    rng = np.random.default_rng(2)
    return make_frame(rng.uniform(300, 600, size=120))


@pytest.mark.parametrize("kind", ["hist", "box"])
@pytest.mark.parametrize("by", [None, "type"])
def test_plot_durations_renders_into_given_axes(wide, tmp_path, kind, by):
    _fig, ax = plt.subplots()
    returned = plot_durations(wide, by=by, kind=kind, ax=ax)
    assert returned is ax
    assert ax.get_title().startswith("Session durations")
    value_label = ax.get_xlabel() if kind == "hist" else ax.get_ylabel()
    assert value_label == "duration (minutes)"
    scale = ax.get_xscale() if kind == "hist" else ax.get_yscale()
    assert scale == "log"
    if kind == "box":
        assert [t.get_text() for t in ax.get_xticklabels()] == (
            ["all sessions"] if by is None else ["text", "voice"]
        )
    save_and_decode(ax, tmp_path)


def test_plot_durations_histogram_counts_every_ended_session(narrow):
    ax = plot_durations(narrow)
    heights = sum(patch.get_height() for patch in ax.patches)
    assert heights == 120
    assert ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "duration (minutes)"
    low, high = ax.get_xlim()
    assert low <= 5 and high >= 10  # shown in minutes


def test_plot_durations_log_choice(wide, narrow):
    assert plot_durations(narrow, kind="box").get_yscale() == "linear"
    assert plot_durations(wide, log=False).get_xscale() == "linear"
    assert plot_durations(narrow, log=True).get_xscale() == "log"


def test_plot_durations_rejects_bad_arguments(narrow):
    with pytest.raises(ValueError, match="kind"):
        plot_durations(narrow, kind="violin")
    with pytest.raises(ValueError, match="nope"):
        plot_durations(narrow, by="nope")


def test_plot_activity_from_frame_and_from_table(wide, tmp_path):
    table = activity(wide, "1D", tz="Europe/Berlin")
    for source in (wide, table):
        _fig, ax = plt.subplots()
        returned = plot_activity(source, "1D", tz="Europe/Berlin", ax=ax)
        assert returned is ax
        assert [p.get_height() for p in ax.patches] == table["started"].tolist()
        (line,) = ax.right_ax.get_lines()
        assert line.get_ydata().tolist() == table["peak_concurrent"].tolist()
        assert ax.get_title()
        assert ax.get_ylabel() == "sessions started"
        assert ax.right_ax.get_ylabel() == "peak concurrent sessions"
        assert "Europe/Berlin" in ax.get_xlabel()
        save_and_decode(ax, tmp_path)


def test_plot_activity_dst_bar_widths(wide):
    ax = plot_activity(wide, "1D", tz="Europe/Berlin")
    widths_hours = [round(p.get_width() / 0.9 * 24, 6) for p in ax.patches]
    table = activity(wide, "1D", tz="Europe/Berlin")
    assert table.index[2].strftime("%Y-%m-%d") == "2024-03-31"
    assert widths_hours[2] == 23  # the spring-forward day


def test_plot_activity_rejects_grouped_table(wide):
    with pytest.raises(ValueError, match="select a group"):
        plot_activity(activity(wide, "1D", by="type"))


def test_plot_hourly_renders_profile(wide, tmp_path):
    profile = hourly_profile(wide, tz="America/New_York")
    for source in (wide, profile):
        fig, ax = plt.subplots()
        returned = plot_hourly(source, tz="America/New_York", ax=ax)
        assert returned is ax
        (image,) = ax.get_images()
        np.testing.assert_array_equal(np.asarray(image.get_array()), profile.to_numpy())
        assert len(fig.axes) == 2  # the heat map and its colorbar
        assert ax.get_xlabel() == "hour of day (America/New_York)"
        assert ax.get_ylabel() == "weekday"
        assert [t.get_text() for t in ax.get_yticklabels()] == [
            "Mon",
            "Tue",
            "Wed",
            "Thu",
            "Fri",
            "Sat",
            "Sun",
        ]
        assert ax.get_title()
        save_and_decode(ax, tmp_path)


def test_plots_without_axes_make_a_figure(narrow):
    for ax in (plot_durations(narrow), plot_activity(narrow), plot_hourly(narrow)):
        assert ax.figure is not None
        assert ax in ax.figure.axes


def test_missing_matplotlib_explains_install(narrow, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    for plot in (plot_durations, plot_activity, plot_hourly):
        with pytest.raises(ImportError, match=r"pip install mihu_frames\[plot\]"):
            plot(narrow)


def test_plot_hourly_of_a_profile_names_its_time_zone(wide):
    profile = hourly_profile(wide, tz="Asia/Kolkata")
    ax = plot_hourly(profile)
    assert "Asia/Kolkata" in ax.get_title() and "Asia/Kolkata" in ax.get_xlabel()
