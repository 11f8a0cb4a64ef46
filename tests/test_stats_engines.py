"""The statistics on every source give the pandas path's result: a snapshot root (DuckDB over
its files), a Polars DataFrame and LazyFrame, a DuckDB relation. Same rows, labels, dtypes and
order, exact values, over DST changes, open, zero-length, reversed and start-less sessions,
null and untagged group keys. Bad input gets an error naming what was passed. ``to="polars"``
returns the frame's columns and types. (Spark: tests/test_stats_spark.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from test_stats import DAY, frame_from_records, make_records, us

import mihu_frames as mf
from mihu_frames import schema
from mihu_frames import stats as pandas_stats

SOURCES = ("root", "polars", "lazy", "duckdb")
STATS_BY = (None, "agent_uuid", ["status", "type"], "conversation_uuid")
ACTIVITY_CASES = (
    ("D", "Europe/Berlin", None, {}),
    ("W", "Europe/Istanbul", None, {}),
    ("W-MON", "Europe/Berlin", "agent_uuid", {"closed": "left", "label": "left"}),
    ("h", "Europe/Berlin", "status", {}),
    ("MS", "America/New_York", None, {}),
    ("ME", "Europe/Berlin", ["status", "type"], {}),
    ("15min", "UTC", None, {}),
    ("2D", "Asia/Kathmandu", None, {}),
)
ZONES = ("UTC", "Europe/Berlin", "Asia/Kathmandu", "America/New_York")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Sessions over both DST changes of 2026 (Europe and America), with every edge case."""
    spring = make_records(5, 700, us("2026-03-20T00:00:00"), 20 * DAY)
    autumn = make_records(6, 500, us("2026-10-20T00:00:00"), 14 * DAY)
    for i, record in enumerate(autumn):
        record["uuid"] = f"autumn-{i}"
    return frame_from_records(spring + autumn)


@pytest.fixture(scope="module")
def root(frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "root"
    mf.write_snapshot(frame, path)
    return path


def source(kind: str, frame: pd.DataFrame, root: Path) -> object:
    table = schema.from_pandas(frame)
    if kind == "root":
        return root
    if kind == "polars":
        return pl.from_arrow(table)
    if kind == "lazy":
        return pl.from_arrow(table).lazy()
    return duckdb.connect().from_arrow(table)


def plain(result: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(result)


@pytest.mark.parametrize("kind", SOURCES)
def test_session_stats_on_every_source(kind, frame, root):
    sessions = source(kind, frame, root)
    for by in STATS_BY:
        expected = pandas_stats.session_stats(frame, by=by)
        got = mf.session_stats(sessions, by=by)
        assert type(got) is type(expected)
        pd.testing.assert_frame_equal(plain(got), plain(expected), check_exact=True)


@pytest.mark.parametrize("kind", SOURCES)
def test_activity_on_every_source(kind, frame, root):
    sessions = source(kind, frame, root)
    for freq, tz, by, sides in ACTIVITY_CASES:
        expected = pandas_stats.activity(frame, freq, tz, by, **sides)
        got = mf.activity(sessions, freq, tz, by, **sides)
        pd.testing.assert_frame_equal(plain(got), plain(expected), check_exact=True)
        assert got.attrs == expected.attrs, (freq, tz, by)


@pytest.mark.parametrize("kind", SOURCES)
def test_hourly_profile_and_texts_on_every_source(kind, frame, root):
    sessions = source(kind, frame, root)
    for tz in ZONES:
        expected = pandas_stats.hourly_profile(frame, tz)
        got = mf.hourly_profile(sessions, tz)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        assert got.attrs == expected.attrs
    assert mf.summary_text(sessions, tz="Europe/Berlin") == mf.summary_text(
        frame, tz="Europe/Berlin"
    )
    assert mf.stats_text(sessions, by="agent_uuid") == mf.stats_text(frame, by="agent_uuid")


def test_a_root_is_read_as_read_snapshots_reads_it(root):
    """The root's latest state, not its history: a session written twice counts once."""
    df = mf.read_snapshots(root)
    changed = df.head(40).copy()
    changed["fetched_at"] = changed["fetched_at"] + pd.Timedelta(hours=1)
    changed.loc[changed.index[:5], "ended_at"] = pd.NaT  # still open at a later fetch
    changed.loc[changed.index[:5], "is_open"] = True
    changed.loc[changed.index[:5], "duration"] = pd.NaT
    copy = root.parent / "twice"
    mf.write_snapshot(df, copy)
    mf.write_snapshot(changed, copy)
    latest = mf.read_snapshots(copy)
    assert len(mf.read_snapshots(copy, latest=False)) > len(latest)
    pd.testing.assert_frame_equal(
        plain(mf.session_stats(copy, by="status")),
        plain(pandas_stats.session_stats(latest, by="status")),
    )
    pd.testing.assert_frame_equal(
        plain(mf.activity(copy, "D")), plain(pandas_stats.activity(latest, "D"))
    )


def test_empty_sources(tmp_path):
    empty = schema.empty_frame()
    lazy = pl.from_arrow(schema.empty_table()).lazy()
    for by in (None, "agent_uuid"):
        pd.testing.assert_frame_equal(
            plain(mf.session_stats(lazy, by=by)), plain(pandas_stats.session_stats(empty, by=by))
        )
        pd.testing.assert_frame_equal(
            plain(mf.activity(lazy, "W", by=by)), plain(pandas_stats.activity(empty, "W", by=by))
        )
    pd.testing.assert_frame_equal(mf.hourly_profile(lazy), pandas_stats.hourly_profile(empty))
    assert mf.summary_text(lazy) == mf.summary_text(empty)


# --------------------------------------------------------------------------- bad input


def test_an_unsupported_object_is_named():
    with pytest.raises(TypeError, match=r"session_stats: cannot compute on builtins\.list"):
        mf.session_stats([1, 2, 3])
    with pytest.raises(TypeError, match=r"activity: cannot compute on numpy\.ndarray"):
        mf.activity(pd.Series([1]).to_numpy())


def test_missing_columns_are_named(frame):
    lazy = pl.from_arrow(schema.from_pandas(frame)).lazy().drop("ended_at", "is_open")
    with pytest.raises(
        ValueError,
        match=r"a Polars LazyFrame is not a sessions frame, missing "
        r"columns \['ended_at', 'is_open'\]",
    ):
        mf.session_stats(lazy)
    with pytest.raises(ValueError, match=r"by= column\(s\) \['agent'\] not in a DuckDB relation"):
        mf.activity(duckdb.connect().from_arrow(schema.from_pandas(frame)), by="agent")


def test_a_folder_that_is_not_a_root_is_named(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(mf.NotASnapshotRootError, match=r"holds no latest/ table.*other\.txt"):
        mf.hourly_profile(tmp_path)


def test_an_engine_not_installed_names_the_extra(root):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["duckdb"] = None  # as if the extra were not installed
        import mihu_frames as mf
        try:
            mf.session_stats({str(root)!r})
        except ImportError as error:
            print(error)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        f"the snapshot root {str(root)!r} needs duckdb, which is not installed: "
        'pip install "mihu_frames[duckdb]"'
    )


# --------------------------------------------------------------------------- to="polars"


def test_read_snapshots_to_polars(root, frame):
    got = mf.read_snapshots(root, to="polars")
    assert isinstance(got, pl.DataFrame)
    assert got.columns == list(schema.COLUMNS)
    assert got.schema["duration"] == pl.Duration("us")
    assert got.schema["started_at"] == pl.Datetime("us", "UTC")
    assert got.schema["task_uuids"] == pl.List(pl.String)
    assert got.schema["status"] == pl.Enum(list(schema.CATEGORIES["status"]))
    expected = mf.read_snapshots(root)
    assert got["uuid"].to_list() == expected["uuid"].tolist()
    assert got["status"].cast(pl.String).to_list() == expected["status"].astype(str).tolist()
    tags = ["status", "type"]
    assert got.drop(tags).equals(pl.from_arrow(schema.from_pandas(expected)).drop(tags))
    history = mf.read_snapshots(root, latest=False, columns=["uuid", "snapshot_id"], to="polars")
    assert history.columns == ["uuid", "snapshot_id"]
    assert history["snapshot_id"].to_list() == (
        mf.read_snapshots(root, latest=False, columns=["uuid", "snapshot_id"])[
            "snapshot_id"
        ].tolist()
    )
    with pytest.raises(ValueError, match=r"to must be one of 'pandas', 'polars', got 'arrow'"):
        mf.read_snapshots(root, to="arrow")


def test_load_and_listing_to_polars(sim, make_client):
    client = make_client(sim)
    ids = sim.conversation_uuids[:2]
    pandas_frame = client.sessions(ids, status="all")
    polars_frame = client.sessions(ids, status="all", to="polars")
    assert isinstance(polars_frame, pl.DataFrame)
    assert polars_frame.columns == list(pandas_frame.columns)
    assert polars_frame["uuid"].to_list() == pandas_frame["uuid"].tolist()
    assert polars_frame.schema["fetched_at"] == pl.Datetime("us", "UTC")
    pd.testing.assert_frame_equal(
        plain(mf.session_stats(polars_frame, by="status")),
        plain(pandas_stats.session_stats(pandas_frame, by="status")),
    )
    listing = client.conversations(to="polars")
    assert isinstance(listing, pl.DataFrame)
    assert listing["uuid"].to_list() == client.conversations()["uuid"].tolist()
    loaded = mf.load_sessions(
        ids, base_url=sim.base_url, token=sim.token, cache=None, progress=False, to="polars"
    )
    assert sorted(loaded["uuid"].to_list()) == sorted(pandas_frame["uuid"].tolist())
    import inspect

    for func in (mf.load_sessions, mf.list_conversations, mf.read_snapshots, client.sessions):
        assert inspect.signature(func).parameters["to"].default == "pandas"
        assert 'to : {"pandas", "polars"}' in func.__doc__


# --------------------------------------------------------------------------- plots


def _shapes(ax) -> list[object]:
    import numpy as np

    return [
        (p.get_height(), p.get_width())
        if hasattr(p, "get_height")
        else np.round(p.get_xy(), 9).tolist()
        for p in ax.patches
    ]


def _bars(ax) -> list[tuple[float, float]]:
    return [(round(p.get_x(), 9), p.get_height()) for p in ax.patches]


def test_plots_of_a_root_draw_what_the_frame_draws(root, frame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = mf.read_snapshots(root)
    for by, log in ((None, None), (None, False), ("type", None)):
        with pytest.warns(UserWarning) if log is None else _nothing():
            expected = mf.plot_durations(df, by=by, log=log)
        with pytest.warns(UserWarning) if log is None else _nothing():
            got = mf.plot_durations(root, by=by, log=log)
        assert got.get_title() == expected.get_title()
        assert got.get_xlabel() == expected.get_xlabel()
        assert _shapes(got) == _shapes(expected)
        legend = [t.get_text() for t in (got.get_legend() or expected).get_texts()] if by else []
        assert legend == ([t.get_text() for t in expected.get_legend().get_texts()] if by else [])
        plt.close("all")
    expected = mf.plot_activity(df, "W", tz="Europe/Istanbul")
    got = mf.plot_activity(root, "W", tz="Europe/Istanbul")
    assert _bars(got) == _bars(expected) and got.get_title() == expected.get_title()
    plt.close("all")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _boxes_drawn(ax) -> list[tuple[object, ...]]:
    """Every line of a box plot (whiskers, caps, boxes, medians, fliers) by box position, with
    its y values sorted (fliers are drawn in data order on a frame, by value on an engine)."""
    import numpy as np

    return sorted(
        (float(np.mean(line.get_xdata())), line.get_marker(), *np.sort(line.get_ydata()).tolist())
        for line in ax.lines
    )


def _tick_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


@pytest.mark.parametrize("kind", SOURCES)
def test_box_plots_on_every_source_draw_the_frames_box_statistics(kind, frame, root):
    """Medians, quartiles, whiskers (1.5 IQR), fliers and counts per group: to the last bit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sessions = source(kind, frame, root)
    for by in (None, "type", ["status", "type"], "conversation_uuid"):
        for log in (None, False):
            with pytest.warns(UserWarning) if log is None else _nothing():
                expected = mf.plot_durations(frame, by=by, kind="box", log=log)
            with pytest.warns(UserWarning) if log is None else _nothing():
                got = mf.plot_durations(sessions, by=by, kind="box", log=log)
            drawn = _boxes_drawn(got)
            assert len(drawn) == 7 * len(
                got.get_xticklabels()
            )  # whiskers, caps, box, median, fliers
            assert any(len(line) > 3 for line in drawn if line[1] == "o")  # fliers drawn
            assert drawn == _boxes_drawn(expected), (by, log)
            assert _tick_texts(got) == _tick_texts(expected)
            assert (got.get_title(), got.get_xlabel(), got.get_ylabel(), got.get_yscale()) == (
                expected.get_title(),
                expected.get_xlabel(),
                expected.get_ylabel(),
                expected.get_yscale(),
            )
            plt.close("all")


def test_box_plot_fliers_are_bounded_alike_on_a_frame_and_an_engine():
    """Over 1,000 fliers on a side: 1,000 at evenly spaced ranks, the extremes among them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from test_plots import make_frame

    rng = np.random.default_rng(7)
    low = rng.uniform(1, 5, 1100)
    high = rng.uniform(1000, 100_000, 1300)
    seconds = np.concatenate([rng.uniform(100, 110, 4000), low, high, [np.nan] * 3])
    df = make_frame(np.round(seconds, 3))
    lazy = pl.from_arrow(schema.from_pandas(df)).lazy()
    seconds = df["duration"].dt.total_seconds().to_numpy()
    lows, highs = np.sort(seconds[seconds < 50]), np.sort(seconds[seconds > 500])
    assert (lows.size, highs.size) == (1100, 1300)
    note = "(2,000 of 2,400 outliers drawn: at most 1,000 per side of a box, evenly spaced by rank)"
    for sessions in (df, lazy):
        ax = mf.plot_durations(sessions, kind="box", log=False)
        assert ax.get_title() == f"Session durations\n{note}"
        assert _tick_texts(ax) == ["all sessions\n(n=6,400)"]
        (fliers,) = [line.get_ydata() for line in ax.lines if line.get_marker() == "o"]
        assert len(fliers) == 2000
        assert ax.get_ylabel() == "duration (seconds)"
        assert fliers.min() == lows[0] and fliers.max() == highs[-1]
        # evenly spaced ranks: of the 1,300 high ones, the first rank of each i * 1299 // 999
        ranks = np.searchsorted(highs, np.sort(fliers[fliers > 500]))
        assert np.array_equal(np.unique(np.arange(1300) * 999 // 1299, return_index=True)[1], ranks)
        plt.close("all")
    small = mf.plot_durations(df.head(4000), kind="box", log=False)
    assert small.get_title() == "Session durations"  # no fliers thinned, no note
    plt.close("all")


def test_a_box_plot_of_a_bad_source_names_it(frame):
    with pytest.raises(TypeError, match=r"plot_durations: cannot compute on builtins\.dict"):
        mf.plot_durations({"duration": [1, 2]}, kind="box")
    lazy = pl.from_arrow(schema.from_pandas(frame)).lazy().drop("ended_at")
    with pytest.raises(
        ValueError,
        match=r"plot_durations: a Polars LazyFrame is not a sessions frame, missing "
        r"columns \['ended_at'\]",
    ):
        mf.plot_durations(lazy, kind="box")
    with pytest.raises(ValueError, match=r"by= column\(s\) \['agent'\] not in a DuckDB relation"):
        mf.plot_durations(
            duckdb.connect().from_arrow(schema.from_pandas(frame)), by="agent", kind="box"
        )
