"""Every statistic on a PySpark DataFrame, computed in a local Spark (``local[2]``), equals the
pandas path on the same sessions; a Spark DataFrame whose session is stopped gets a clear
error. One Spark session for the module, quiet, with few shuffle partitions, so this stays
short. Needs the ``spark`` extra (installed by ``make test``) and Java 17."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from test_stats import DAY, frame_from_records, make_records, us

import mihu_frames as mf
from mihu_frames import schema
from mihu_frames import stats as pandas_stats

pyspark = pytest.importorskip("pyspark", reason='pip install "mihu_frames[spark]"')
from pyspark.sql import SparkSession  # noqa: E402

# One worker runs them all (make test's --dist loadgroup): Spark starts once, not once a worker.
pytestmark = pytest.mark.xdist_group("spark")


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    session = (
        SparkSession.builder.master("local[2]")
        .appName("mihu_frames tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """A few hundred sessions across the spring DST change, with every edge case."""
    return frame_from_records(make_records(11, 300, us("2026-03-24T00:00:00"), 10 * DAY))


@pytest.fixture(scope="module")
def sessions(spark: SparkSession, frame: pd.DataFrame):
    # A Spark DataFrame as a user reads one (spark.read.parquet(root/sessions) gives the same
    # columns); Spark's Arrow conversion does not take list columns here, so tasks stay out.
    table = schema.from_pandas(frame).drop_columns(["task_uuids"])
    return spark.createDataFrame(table.to_pandas()).cache()


def plain(result: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(result)


def test_session_stats_in_spark(sessions, frame):
    for by in (None, "agent_uuid", ["status", "type"]):
        pd.testing.assert_frame_equal(
            plain(mf.session_stats(sessions, by=by)),
            plain(pandas_stats.session_stats(frame, by=by)),
            check_exact=True,
        )


def test_activity_in_spark(sessions, frame):
    for freq, tz, by in (("W", "Europe/Istanbul", None), ("h", "Europe/Berlin", "agent_uuid")):
        expected = pandas_stats.activity(frame, freq, tz, by)
        got = mf.activity(sessions, freq, tz, by)
        pd.testing.assert_frame_equal(plain(got), plain(expected), check_exact=True)
        assert got.attrs == expected.attrs


def test_hourly_profile_and_summary_in_spark(sessions, frame):
    pd.testing.assert_frame_equal(
        mf.hourly_profile(sessions, tz="Europe/Berlin"),
        pandas_stats.hourly_profile(frame, tz="Europe/Berlin"),
    )
    assert mf.summary_text(sessions, tz="Europe/Berlin") == mf.summary_text(
        frame, tz="Europe/Berlin"
    )


def test_box_plot_in_spark(sessions, frame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from test_stats_engines import _boxes_drawn

    got = mf.plot_durations(sessions, by="type", kind="box", log=False)
    expected = mf.plot_durations(frame, by="type", kind="box", log=False)
    assert _boxes_drawn(got) == _boxes_drawn(expected)
    assert [t.get_text() for t in got.get_xticklabels()] == [
        t.get_text() for t in expected.get_xticklabels()
    ]
    plt.close("all")


def test_a_spark_dataframe_of_a_stopped_session(spark, frame):
    small = spark.createDataFrame([(u,) for u in frame["uuid"].head(5)], ["uuid"])
    spark.stop()
    with pytest.raises(ValueError, match="a PySpark DataFrame whose Spark session is stopped"):
        mf.session_stats(small)
