"""Tests for mihu_frames.plots: each plot renders into a given Axes and to a decodable PNG."""

from __future__ import annotations

import sys
import warnings

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
        # 190 ended sessions (10 of 200 open), half of them text: one label per box, with n.
        assert [t.get_text() for t in ax.get_xticklabels()] == (
            ["all sessions\n(n=190)"] if by is None else ["text\n(n=95)", "voice\n(n=95)"]
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


# --------------------------------------------------------------------------------------------
# Readability: integer ticks, titles in words, few bars, partial buckets, short labels
# --------------------------------------------------------------------------------------------

HOUR = pd.Timedelta(hours=1)


def sessions_between(
    first: str, last: str, every: pd.Timedelta, length: pd.Timedelta, fetched: str
):
    """Sessions of ``length`` starting every ``every`` from ``first`` to ``last`` (UTC), all
    fetched at ``fetched``; every third one is still open."""
    starts = pd.date_range(first, last, freq=every, tz="UTC")
    n = len(starts)
    duration = pd.Series(
        [pd.NaT if i % 3 == 2 else length for i in range(n)], dtype="timedelta64[us]"
    )
    df = make_frame(np.zeros(n))
    df["started_at"] = starts.as_unit("us")
    df["duration"] = duration.to_numpy()
    df["ended_at"] = df["started_at"] + df["duration"]
    df["is_open"] = df["duration"].isna()
    df["fetched_at"] = pd.Timestamp(fetched, tz="UTC")
    df["uuid"] = [f"s{i}" for i in range(n)]
    return df


def is_integer_ticks(values) -> bool:
    return len(values) > 1 and all(float(v).is_integer() for v in values)


def test_counts_have_integer_ticks(narrow):
    df = sessions_between("2024-05-01", "2024-05-03", 7 * HOUR, 2 * HOUR, "2024-05-04")
    ax = plot_activity(df, "1D")
    # Few sessions at once (open ones run to the fetch): matplotlib alone would tick halves.
    assert activity(df, "1D")["peak_concurrent"].max() <= 3
    assert is_integer_ticks(ax.get_yticks()) and is_integer_ticks(ax.right_ax.get_yticks())
    hist = plot_durations(narrow)
    assert is_integer_ticks(hist.get_yticks())
    heat_fig, heat = plt.subplots()
    plot_hourly(df, ax=heat)
    colorbar_ax = heat_fig.axes[1]
    assert is_integer_ticks(colorbar_ax.get_yticks())


@pytest.mark.parametrize(
    ("freq", "words"),
    [
        ("1D", "per day"),
        ("D", "per day"),
        ("1h", "per hour"),
        ("15min", "per 15 minutes"),
        ("2h", "per 2 hours"),
        ("W", "per week (Mon–Sun)"),
        ("W-MON", "per week (Tue–Mon)"),
        ("MS", "per month"),
        ("QS", "per quarter"),
    ],
)
def test_activity_titles_in_words(freq, words):
    df = sessions_between("2024-05-01", "2024-05-02", 3 * HOUR, HOUR, "2024-05-03")
    ax = plot_activity(df, freq, max_bars=None)
    assert ax.get_title() == f"Sessions started and peak concurrency {words}"
    assert ax.get_xlabel() == "time (UTC)"


def test_too_many_buckets_are_regrouped_and_the_title_says_so():
    # 300 days of hourly buckets: 7,200 bars would be a solid block.
    df = sessions_between(
        "2024-01-01", "2024-10-26 23:00", 5 * HOUR, 90 * pd.Timedelta(minutes=1), "2024-12-01"
    )
    hourly = activity(df, "1h", tz="Europe/Berlin")
    weekly = activity(df, "W", tz="Europe/Berlin")
    assert len(hourly) > 7000
    for source in (df, hourly):
        ax = plot_activity(source, "1h", tz="Europe/Berlin")
        assert ax.get_title() == (
            "Sessions started and peak concurrency per week (Mon–Sun)\n"
            f"(regrouped from {len(hourly):,} buckets per hour, too many to read as bars)"
        )
        assert [p.get_height() for p in ax.patches] == weekly["started"].tolist()
        (line,) = ax.right_ax.get_lines()
        assert line.get_ydata().tolist() == weekly["peak_concurrent"].tolist()
    assert len(plot_activity(df, "1h", tz="Europe/Berlin", max_bars=None).patches) == len(hourly)
    assert len(plot_activity(df, "1D", max_bars=400).patches) == len(activity(df, "1D"))


def test_a_table_that_does_not_nest_is_drawn_as_it_is():
    # Weeks do not nest in months, quarters or years: a weekly table stays weekly.
    df = sessions_between("2020-01-01", "2024-01-01", 50 * HOUR, HOUR, "2024-02-01")
    weekly = activity(df, "W")
    assert len(weekly) > 120
    ax = plot_activity(weekly)
    assert len(ax.patches) == len(weekly)
    assert ax.get_title() == "Sessions started and peak concurrency per week (Mon–Sun)"


def test_weekly_bars_cover_monday_to_sunday():
    import matplotlib.dates as mdates

    df = sessions_between("2024-03-20", "2024-04-10", 9 * HOUR, HOUR, "2024-05-01")
    weekly = activity(df, "W", tz="Europe/Berlin")
    assert weekly.index[0].strftime("%a %Y-%m-%d") == "Sun 2024-03-24"
    ax = plot_activity(weekly)
    first = ax.patches[0]
    monday = pd.Timestamp("2024-03-18", tz="Europe/Berlin")
    assert first.get_x() == pytest.approx(mdates.date2num(monday.to_pydatetime()))
    # The week of the spring DST change is 7 days minus one hour long.
    second = ax.patches[1]
    assert second.get_width() / 0.9 == pytest.approx(7 - 1 / 24)


def test_partial_last_bucket_is_marked():
    # Fetched at 14:00 on 3 May: that day's bucket is only partly observed.
    df = sessions_between("2024-05-01", "2024-05-03 12:00", 4 * HOUR, HOUR, "2024-05-03 14:00")
    ax = plot_activity(df, "1D")
    alphas = [p.get_alpha() for p in ax.patches]
    assert alphas == [None, None, 0.4]
    (span,) = [c for c in ax.collections if c.get_hatch() == "///"]
    x = span.get_paths()[0].vertices[:, 0]
    import matplotlib.dates as mdates

    day = mdates.date2num(pd.Timestamp("2024-05-03", tz="UTC").to_pydatetime())
    assert (x.min(), x.max()) == pytest.approx((day, day + 1))
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [
        "sessions started",
        "peak concurrent",
        "partial bucket (data fetched 2024-05-03 14:00)",
    ]
    assert ax.get_legend().legend_handles[2].get_hatch() == "///"
    complete = sessions_between("2024-05-01", "2024-05-03 12:00", 4 * HOUR, HOUR, "2024-05-04")
    ax = plot_activity(complete, "1D")
    assert [p.get_alpha() for p in ax.patches] == [None] * 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "sessions started",
        "peak concurrent",
    ]
    # From a table, the fetch time comes with it; in another time zone, it is shown there.
    table = activity(df, "1D", tz="Asia/Kolkata")
    ax = plot_activity(table)
    assert ax.get_legend().get_texts()[2].get_text() == (
        "partial bucket (data fetched 2024-05-03 19:30)"
    )


UUIDS = [
    "01ee962c-76db-4c49-aa67-37e23f9bfeb6",
    "19790aec-d097-4f5e-9a57-6c261cb0ff50",
    "19790aec-1111-4f5e-9a57-6c261cb0ff50",
]


def test_box_labels_are_short_uuids_aligned_under_their_boxes(wide):
    df = wide.copy()
    df["conversation_uuid"] = [UUIDS[i % 2] for i in range(len(df))]
    ax = plot_durations(df, by="conversation_uuid", kind="box")
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == ["01ee962c\n(n=95)", "19790aec\n(n=95)"]
    assert all(t.get_ha() == "center" and t.get_rotation() == 0 for t in labels)
    assert [t.get_position()[0] for t in labels] == [1, 2]
    assert ax.get_xlabel() == "conversation_uuid (first characters)"
    # Two UUIDs alike in their first 9 characters: every label gets 10.
    df["conversation_uuid"] = [UUIDS[i % 3] for i in range(len(df))]
    texts = [
        t.get_text().split("\n")[0]
        for t in plot_durations(df, by="conversation_uuid", kind="box").get_xticklabels()
    ]
    assert texts == ["01ee962c-7", "19790aec-1", "19790aec-d"]


def test_many_box_labels_are_rotated_and_anchored_at_their_end(wide):
    df = wide.copy()
    df["agent_uuid"] = [f"{i % 8:08x}-76db-4c49-aa67-37e23f9bfeb6" for i in range(len(df))]
    ax = plot_durations(df, by="agent_uuid", kind="box")
    labels = ax.get_xticklabels()
    assert len(labels) == 8
    assert labels[0].get_text().startswith("00000000 (n=")
    assert all(t.get_rotation() == 30 for t in labels)
    assert all(t.get_ha() == "right" and t.get_rotation_mode() == "anchor" for t in labels)


def test_histogram_density_compares_groups_of_different_sizes():
    rng = np.random.default_rng(3)
    big = make_frame(rng.uniform(60, 600, size=500))
    small = make_frame(rng.uniform(60, 600, size=20), seed=1)
    big["type"], small["type"] = "text", "voice"
    df = pd.concat([big, small], ignore_index=True)
    counts = plot_durations(df, by="type")
    assert counts.get_ylabel() == "sessions"
    shares = plot_durations(df, by="type", density=True)
    assert shares.get_ylabel() == "share of sessions in each group per bin"
    assert [t.get_text() for t in shares.get_legend().get_texts()] == [
        "text (n=500)",
        "voice (n=20)",
    ]
    assert sorted(p.get_label() for p in shares.patches) == ["text (n=500)", "voice (n=20)"]
    for outline in shares.patches:
        n = int(outline.get_label().split("n=")[1].rstrip(")"))
        heights = outline.get_xy()[1:-1:2, 1]  # a step outline visits each bin's top once
        assert heights.sum() == pytest.approx(1.0)
        assert np.allclose(heights * n, np.round(heights * n))  # whole sessions per bin
    overall = plot_durations(df, density=True)
    assert overall.get_ylabel() == "share of sessions per bin"
    assert sum(p.get_height() for p in overall.patches) == pytest.approx(1.0)


def test_log_duration_axis_reads_in_plain_numbers(wide):
    ax = plot_durations(wide)
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all("^" not in text and "$" not in text for text in labels)
    assert "1" in labels and "10" in labels


def test_a_log_duration_axis_says_how_many_zero_length_sessions_it_leaves_out(wide):
    # Three sessions of zero length (and one open): a log axis cannot show them; it says so.
    seconds = wide["duration"].dt.total_seconds().to_numpy(copy=True)
    seconds[10:13] = 0.0
    df = make_frame(seconds)
    with pytest.warns(UserWarning, match=r"^plot_durations: 3 sessions of zero length not shown"):
        ax = plot_durations(df)
    assert ax.get_xscale() == "log"
    assert ax.get_title() == "Session durations\n(3 sessions of zero length not shown (log axis))"
    assert sum(patch.get_height() for patch in ax.patches) == 190 - 3
    # On a linear axis every ended session is drawn, and nothing is said.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        linear = plot_durations(df, log=False)
    assert linear.get_title() == "Session durations"
    assert sum(patch.get_height() for patch in linear.patches) == 190


@pytest.mark.parametrize("tz", ["Istanbul", "Europe/Berlinn"])
def test_plots_taking_tz_refuse_an_unknown_zone_with_one_value_error(wide, tz):
    table, profile = activity(wide, "1D"), hourly_profile(wide)
    calls = {
        "plot_activity": [lambda: plot_activity(wide, tz=tz), lambda: plot_activity(table, tz=tz)],
        "plot_hourly": [lambda: plot_hourly(wide, tz=tz), lambda: plot_hourly(profile, tz=tz)],
    }
    for name, attempts in calls.items():
        for attempt in attempts:
            with pytest.raises(ValueError) as caught:
                attempt()
            assert type(caught.value) is ValueError
            assert str(caught.value).startswith(f"{name}: unknown time zone {tz!r}: ")
