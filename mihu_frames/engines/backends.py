"""Where a statistic's SQL runs: DuckDB (roots, Polars frames, DuckDB relations) or Spark.

Each backend is a small object: the columns of its source, the few SQL spellings that differ
(:class:`Dialect`), and ``run(sql)`` giving a small ``pyarrow.Table``. The statistics' SQL
(:mod:`mihu_frames.engines.compute`) is written once against ``{src}`` and these spellings.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mihu_frames.engines.source import is_root, latest_dataset

__all__ = ["Backend", "Dialect", "backend_of"]

logger = logging.getLogger("mihu_frames")

#: DuckDB's memory for a statistic over a root: it spills sorts and windows beyond this.
ROOT_MEMORY_LIMIT = "1GB"
_names = itertools.count()


@dataclass(frozen=True)
class Dialect:
    """The SQL spellings that differ between DuckDB and Spark."""

    name: str
    quote_char: str
    epoch_us: str  # a function: instant -> int64 microseconds since the epoch (UTC)
    int_div: str  # an operator: integer division (both operands non-negative here)
    quantiles: str  # a function: (values, list of q) -> list of linear-interpolated quantiles
    list_open: str  # how a list literal opens and closes
    list_close: str

    def quote(self, name: str) -> str:
        q = self.quote_char
        return q + name.replace(q, q + q) + q

    def micros(self, column: str) -> str:
        return f"{self.epoch_us}({self.quote(column)})"

    def div(self, a: str, b: str) -> str:
        return f"(({a}) {self.int_div} ({b}))"

    def quantile_list(self, values: str, qs: tuple[float, ...]) -> str:
        items = ", ".join(repr(q) for q in qs)
        return f"{self.quantiles}({values}, {self.list_open}{items}{self.list_close})"


DUCKDB = Dialect("duckdb", '"', "epoch_us", "//", "quantile_cont", "[", "]")
SPARK = Dialect("spark", "`", "unix_micros", "div", "percentile", "array(", ")")


class Backend:
    """A source of sessions and the engine that computes over it."""

    dialect: Dialect
    #: What was passed, for messages ("a snapshot root 'data/x'", "a Polars LazyFrame").
    described: str

    def columns(self) -> list[str]:
        raise NotImplementedError

    def run(self, sql: str) -> pa.Table:
        """Run ``sql`` (``{src}`` names the sessions) and return its (small) result."""
        raise NotImplementedError


def _extra_missing(module: str, extra: str, passed: str) -> ImportError:
    return ImportError(
        f'{passed} needs {module}, which is not installed: pip install "mihu_frames[{extra}]"'
    )


def _duckdb(passed: str) -> Any:
    try:
        import duckdb
    except ImportError:
        raise _extra_missing("duckdb", "duckdb", passed) from None
    return duckdb


def _arrow(result: Any) -> pa.Table:
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):  # by DuckDB version
        if hasattr(result, name):
            table = getattr(result, name)()
            break
    if isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    return table


class DuckDBBackend(Backend):
    """DuckDB over an Arrow-readable source on a connection of its own (roots, Polars)."""

    dialect = DUCKDB

    def __init__(self, source: Any, columns: list[str], described: str, *, spill: bool) -> None:
        duckdb = _duckdb(described)
        self.described = described
        self._columns = columns
        self._source = source
        self._con = duckdb.connect()
        if spill:  # a root may be larger than memory: bound DuckDB and let it spill
            self._tmp = tempfile.TemporaryDirectory(prefix="mihu_frames_duckdb_")
            self._con.execute(f"SET memory_limit = '{ROOT_MEMORY_LIMIT}'")
            self._con.execute(f"SET temp_directory = '{self._tmp.name}'")
            self._con.execute("SET preserve_insertion_order = false")
        self._con.register("mf_src", source)

    def columns(self) -> list[str]:
        return self._columns

    def run(self, sql: str) -> pa.Table:
        logger.debug("duckdb: %s", sql[:2000])
        return _arrow(self._con.sql(sql.replace("{src}", "mf_src")))


class RelationBackend(Backend):
    """A DuckDB relation, computed on its own connection (``relation.query``)."""

    dialect = DUCKDB

    def __init__(self, relation: Any) -> None:
        self.described = "a DuckDB relation"
        self._relation = relation

    def columns(self) -> list[str]:
        return list(self._relation.columns)

    def run(self, sql: str) -> pa.Table:
        name = f"mf_src_{next(_names)}"
        logger.debug("duckdb relation: %s", sql[:2000])
        return _arrow(self._relation.query(name, sql.replace("{src}", name)))


class SparkBackend(Backend):
    """A PySpark DataFrame, computed by its Spark session; only results are collected."""

    dialect = SPARK

    def __init__(self, frame: Any) -> None:
        self.described = "a PySpark DataFrame"
        session = getattr(frame, "sparkSession", None)
        if session is None:
            raise ValueError(
                "a PySpark DataFrame without an active Spark session: start one "
                "(SparkSession.builder.getOrCreate()) and build the DataFrame in it"
            )
        try:
            session.sparkContext  # noqa: B018 - raises once the session was stopped
            stopped = session.sparkContext._jsc is None
        except Exception:
            stopped = True
        if stopped:
            raise ValueError(
                "a PySpark DataFrame whose Spark session is stopped: the statistics run in "
                "Spark, so start a session and build the DataFrame again"
            )
        self._frame = frame
        self._session = session
        self._name = f"mihu_frames_src_{os.getpid()}_{next(_names)}"
        frame.createOrReplaceTempView(self._name)

    def columns(self) -> list[str]:
        return list(self._frame.columns)

    def run(self, sql: str) -> pa.Table:
        logger.debug("spark: %s", sql[:2000])
        result = self._session.sql(sql.replace("{src}", self._name))
        if hasattr(result, "toArrow"):
            return result.toArrow()
        return pa.Table.from_pandas(result.toPandas(), preserve_index=False)


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def backend_of(obj: object, func: str) -> Backend:
    """The backend for ``obj`` (anything but a pandas DataFrame), or a ``TypeError`` naming it.

    Takes a snapshot root (path or URI), a Polars DataFrame or LazyFrame, a DuckDB relation or
    a PySpark DataFrame.
    """
    if is_root(obj):
        dataset = latest_dataset(obj)  # type: ignore[arg-type]
        return DuckDBBackend(
            dataset, list(dataset.schema.names), f"the snapshot root {str(obj)!r}", spill=True
        )
    module = type(obj).__module__.split(".")[0]
    name = type(obj).__name__
    if module == "polars" and name in ("DataFrame", "LazyFrame"):
        described = f"a Polars {name}"
        lazy = name == "LazyFrame"
        columns = list(obj.collect_schema().names() if lazy else obj.columns)  # type: ignore[attr-defined]
        return DuckDBBackend(obj, columns, described, spill=name == "LazyFrame")
    if module in ("duckdb", "_duckdb") and "Relation" in name:
        return RelationBackend(obj)
    if module == "pyspark" and name == "DataFrame":
        return SparkBackend(obj)
    raise TypeError(
        f"{func}: cannot compute on {_type_name(obj)}: pass a pandas DataFrame, a snapshot "
        "root (a path or URI), a Polars DataFrame or LazyFrame, a DuckDB relation or a "
        "PySpark DataFrame"
    )
