"""The sessions frame's schema: the one place it is defined.

Everything else derives from here: the JSON decoder's explicit schema, frame building, empty
frames, snapshot reading and the documentation table. Change a column here and only here.
"""

from __future__ import annotations

import re
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.extensions import ExtensionDtype

#: Bump when the frame's columns or types change; recorded in every snapshot.
SCHEMA_VERSION = 1

#: Values the API accepts for the ``status`` and ``type`` filters (documented enums).
STATUS_VALUES: tuple[str, ...] = ("active", "completed", "timed_out")
TYPE_VALUES: tuple[str, ...] = ("text", "voice")
SORT_BY_VALUES: tuple[str, ...] = ("created_at", "updated_at", "started_at", "last_activity_at")
SORT_DIR_VALUES: tuple[str, ...] = ("asc", "desc")

#: The seven timestamps a session carries, in frame order.
TIMESTAMP_FIELDS: tuple[str, ...] = (
    "started_at",
    "ended_at",
    "last_activity_at",
    "evaluated_at",
    "summary_generated_at",
    "created_at",
    "updated_at",
)
#: Plain string fields of a session, as sent.
STRING_FIELDS: tuple[str, ...] = (
    "summary",
    "agent_uuid",
    "call_uuid",
    "campaign_uuid",
    "listing_uuid",
)
CONTACT_FIELDS: tuple[str, ...] = ("uuid", "name", "surname", "phone_number", "email")
#: Every field the documentation lists for a session.
SESSION_FIELDS: tuple[str, ...] = (
    "uuid",
    *TIMESTAMP_FIELDS,
    "summary",
    "conversation_uuid",
    "agent_uuid",
    "contact",
    "call_uuid",
    "campaign_uuid",
    "listing_uuid",
    "task_uuids",
)

#: Every instant in a frame: microseconds, UTC.
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
#: A UUID as the API writes one (any case; frames hold them lower-case, see ID_COLUMNS).
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TD = pa.duration("us")

#: A session as the API sends it; timestamps stay strings until parsed (offsets vary).
CONTACT_TYPE = pa.struct([(name, pa.string()) for name in CONTACT_FIELDS])
API_SESSION_TYPE = pa.struct(
    [
        ("uuid", pa.string()),
        *[(name, pa.string()) for name in TIMESTAMP_FIELDS],
        ("summary", pa.string()),
        ("conversation_uuid", pa.string()),
        ("agent_uuid", pa.string()),
        ("contact", CONTACT_TYPE),
        ("call_uuid", pa.string()),
        ("campaign_uuid", pa.string()),
        ("listing_uuid", pa.string()),
        ("task_uuids", pa.list_(pa.string())),
    ]
)
#: A session for pyarrow's JSON reader, which parses ISO 8601 offsets itself while reading.
_READER_SESSION_TYPE = pa.struct(
    [
        pa.field(f.name, TIMESTAMP_TYPE) if f.name in TIMESTAMP_FIELDS else f
        for f in API_SESSION_TYPE
    ]
)
# The field lists are annotated: pyarrow-stubs type each field by its data type, and mypy
# joins a list of differently typed fields to a list of object, which pa.schema refuses.
_API_PAGE_FIELDS: list[tuple[str, pa.DataType]] = [
    ("success", pa.bool_()),
    ("message", pa.string()),
    (
        "data",
        pa.struct(
            [
                ("current_page", pa.int64()),
                ("total", pa.int64()),
                ("last_page", pa.int64()),
                ("per_page", pa.int64()),
                ("data", pa.list_(_READER_SESSION_TYPE)),
            ]
        ),
    ),
]
#: The documented response envelope, for the JSON decoder.
API_PAGE_SCHEMA = pa.schema(_API_PAGE_FIELDS)

_SESSIONS_FIELDS: list[pa.Field] = [
    pa.field("conversation_uuid", pa.string()),
    pa.field("uuid", pa.string()),
    pa.field("status", pa.string()),
    pa.field("type", pa.string()),
    *[pa.field(name, TIMESTAMP_TYPE) for name in TIMESTAMP_FIELDS],
    pa.field("duration", _TD),
    pa.field("time_to_evaluation", _TD),
    pa.field("time_to_summary", _TD),
    pa.field("idle_before_end", _TD),
    pa.field("is_open", pa.bool_(), nullable=False),
    pa.field("summary", pa.string()),
    pa.field("agent_uuid", pa.string()),
    pa.field("call_uuid", pa.string()),
    pa.field("campaign_uuid", pa.string()),
    pa.field("listing_uuid", pa.string()),
    *[pa.field(f"contact_{name}", pa.string()) for name in CONTACT_FIELDS],
    pa.field("task_uuids", pa.list_(pa.string()), nullable=False),
    pa.field("task_count", pa.int64(), nullable=False),
    pa.field("extra", pa.string()),
    pa.field("fetched_at", TIMESTAMP_TYPE),
]
#: The sessions frame, column by column, in its stable order.
SESSIONS_SCHEMA = pa.schema(
    _SESSIONS_FIELDS,
    metadata={b"mihu_frames.schema_version": str(SCHEMA_VERSION).encode()},
)
COLUMNS: tuple[str, ...] = tuple(SESSIONS_SCHEMA.names)

#: What ``status`` and ``type`` hold in pandas for a row fetched without that filter. The API
#: never sends a session's status or type: only a filtered query tells it. In Arrow and
#: Parquet such a row holds null; in pandas it shows as this category, so that
#: ``df.status.value_counts()`` cannot read as "no sessions" (null would hide every row and
#: leave the fixed categories at 0).
UNTAGGED = "untagged"
#: Columns that become pandas categoricals, with their fixed categories (stable across frames).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "status": (*STATUS_VALUES, UNTAGGED),
    "type": (*TYPE_VALUES, UNTAGGED),
}

_STRING_DTYPE = pd.StringDtype("pyarrow")
_LIST_DTYPE = pd.ArrowDtype(pa.list_(pa.string()))


def pandas_dtypes() -> dict[str, object]:
    """Return the pandas dtype of every frame column, derived from ``SESSIONS_SCHEMA``."""
    dtypes: dict[str, object] = {}
    for field in SESSIONS_SCHEMA:
        if field.name in CATEGORIES:
            dtypes[field.name] = pd.CategoricalDtype(list(CATEGORIES[field.name]))
        elif pa.types.is_string(field.type):
            dtypes[field.name] = _STRING_DTYPE
        elif pa.types.is_list(field.type):
            dtypes[field.name] = _LIST_DTYPE
        elif pa.types.is_timestamp(field.type):
            dtypes[field.name] = pd.DatetimeTZDtype(unit="us", tz="UTC")
        elif pa.types.is_duration(field.type):
            dtypes[field.name] = "timedelta64[us]"
        else:
            dtypes[field.name] = np.dtype(field.type.to_pandas_dtype())
    return dtypes


def types_mapper(arrow_type: pa.DataType) -> ExtensionDtype | None:
    """The pandas dtype of the frame's Arrow strings and lists (for ``to_pandas``)."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return _STRING_DTYPE
    if pa.types.is_list(arrow_type):
        return _LIST_DTYPE
    return None


def to_pandas(table: pa.Table, columns: list[str] | None = None) -> pd.DataFrame:
    """Convert an Arrow table in ``SESSIONS_SCHEMA`` to the sessions frame with exact dtypes.

    ``columns`` converts only those frame columns (in that order), with the same dtypes.
    """
    names = list(COLUMNS) if columns is None else list(columns)
    schema = pa.schema([SESSIONS_SCHEMA.field(name) for name in names])
    table = table.select(names).cast(schema)
    tags = {name: table.column(name) for name in names if name in CATEGORIES}
    table = table.drop_columns(list(tags))
    df = table.to_pandas(types_mapper=types_mapper, coerce_temporal_nanoseconds=False)
    for column, values in tags.items():  # in frame order, so each insert lands in place
        categories = CATEGORIES[column]
        untagged = categories.index(UNTAGGED)
        found = pc.index_in(values, value_set=pa.array(categories))
        codes = found.fill_null(untagged).to_numpy()
        tagged = pd.Categorical.from_codes(codes, categories=pd.Index(categories))
        # pandas-stubs' insert leaves out extension arrays, which pandas takes as array-likes
        df.insert(names.index(column), column, cast(Any, tagged))
    return df


#: The frame's ids: canonical lower-case UUID text everywhere (frame, store, lookups), whatever
#: case the caller or the server used, so a lookup never misses a session by its spelling.
ID_COLUMNS: tuple[str, ...] = ("conversation_uuid", "uuid")


def canonical_ids(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Ids in their canonical spelling: lower case (a UUID's hex digits are ASCII).

    ``utf8_lower``, not ``ascii_lower``: pyarrow 26's ``ascii_lower`` writes an invalid array for
    a string array whose offsets do not start at zero (a slice of a pandas frame's column).
    """
    return pc.utf8_lower(values)


def from_pandas(df: pd.DataFrame) -> pa.Table:
    """Convert a sessions frame back to an Arrow table in ``SESSIONS_SCHEMA``.

    Ids become lower case (:data:`ID_COLUMNS`). An instant must say which instant it is: a
    tz-naive timestamp column is a ``ValueError`` naming the column and the fix (taking it as
    UTC would move every wall-clock time that was local), and so is a value finer than the
    frame's microseconds (rounding would change the data without a word).
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"not a sessions frame: missing columns {missing}")
    columns = []
    for field in SESSIONS_SCHEMA:
        series = df[field.name]
        if field.name in CATEGORIES:
            series = series.astype(object)
            series = series.where(series.notna() & (series != UNTAGGED), None)
        if pa.types.is_timestamp(field.type):
            _require_instants(field.name, series)
        try:
            values = pa.array(series, type=field.type, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(_unfit(field, series, exc)) from None
        if field.name in ID_COLUMNS:
            values = canonical_ids(values)
        columns.append(values)
    return pa.Table.from_arrays(columns, schema=SESSIONS_SCHEMA)


def _require_instants(name: str, series: pd.Series) -> None:
    """``ValueError`` unless ``series`` holds time-zone-aware instants (or only nulls)."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_timestamp(dtype.pyarrow_dtype):
        naive = dtype.pyarrow_dtype.tz is None
    elif pd.api.types.is_datetime64_dtype(dtype):
        naive = True
    else:  # objects: datetimes (each may be naive), or nulls only
        naive = any(getattr(v, "tzinfo", False) is None for v in series.dropna())
    if naive:
        raise ValueError(
            f"column {name!r} holds time-zone-naive timestamps ({dtype}): say where they were "
            f"recorded, e.g. df[{name!r}] = df[{name!r}].dt.tz_localize('Europe/Berlin') "
            "(or 'UTC' if they are UTC); a naive time is never taken as UTC"
        )


def _unfit(field: pa.Field, series: pd.Series, exc: Exception) -> str:
    """The message for a column whose values do not fit its type."""
    message = f"column {field.name!r} ({series.dtype}) does not fit {field.type}: {exc}"
    if pa.types.is_timestamp(field.type) or pa.types.is_duration(field.type):
        floor = "dt.floor('us')"
        message += (
            f"; the frame holds microseconds: round it first, df[{field.name!r}] = "
            f"df[{field.name!r}].{floor}"
        )
    return message


def empty_table() -> pa.Table:
    """Return an empty Arrow table with the sessions schema."""
    return SESSIONS_SCHEMA.empty_table()


def empty_frame() -> pd.DataFrame:
    """Return an empty sessions frame with every column and dtype."""
    return to_pandas(empty_table())


# --------------------------------------------------------------------------- conversations

#: The account's conversations (``GET /api/v1/conversations``): fields a real client reads.
#: Their list is not in the API's documentation, so everything else the listing sends is
#: kept: other ``*_at`` fields as timestamp columns, the rest as JSON in ``extra``.
CONVERSATION_STRING_FIELDS: tuple[str, ...] = ("agent_uuid", "channel", "status", "phone")
CONVERSATION_TIMESTAMP_FIELDS: tuple[str, ...] = ("created_at", "updated_at", "last_message_at")
CONVERSATION_FIELDS: tuple[str, ...] = (
    "uuid",
    *CONVERSATION_STRING_FIELDS,
    "contact",
    *CONVERSATION_TIMESTAMP_FIELDS,
    "sessions_count",
)
_CONVERSATIONS_FIELDS: list[pa.Field] = [
    pa.field("uuid", pa.string(), nullable=False),
    *[pa.field(name, pa.string()) for name in CONVERSATION_STRING_FIELDS],
    *[pa.field(f"contact_{name}", pa.string()) for name in CONTACT_FIELDS],
    *[pa.field(name, TIMESTAMP_TYPE) for name in CONVERSATION_TIMESTAMP_FIELDS],
    pa.field("sessions_count", pa.int64()),
    pa.field("extra", pa.string()),
    pa.field("fetched_at", TIMESTAMP_TYPE),
]
CONVERSATIONS_SCHEMA = pa.schema(
    _CONVERSATIONS_FIELDS,
    metadata={b"mihu_frames.schema_version": str(SCHEMA_VERSION).encode()},
)


def conversations_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Convert a conversations table (``CONVERSATIONS_SCHEMA`` plus any other ``*_at``
    columns) to pandas: strings as ``string[pyarrow]``, counts as nullable ``Int64``."""

    def mapper(arrow_type: pa.DataType) -> ExtensionDtype | None:
        if pa.types.is_int64(arrow_type):
            return pd.Int64Dtype()
        return types_mapper(arrow_type)

    return table.to_pandas(types_mapper=mapper, coerce_temporal_nanoseconds=False)


# --------------------------------------------------------------------------- Polars


def _polars() -> object:
    try:
        import polars
    except ImportError:
        raise ImportError(
            'to="polars" needs polars, which is not installed: pip install "mihu_frames[polars]"'
        ) from None
    return polars


def to_polars(table: pa.Table, columns: list[str] | None = None) -> Any:
    """Convert an Arrow table in ``SESSIONS_SCHEMA`` to a Polars DataFrame, without pandas.

    The same columns as :func:`to_pandas`, typed from the schema: timestamps
    ``Datetime("us", "UTC")``, durations ``Duration("us")``, lists ``List(String)``; ``status``
    and ``type`` as ``Enum`` of their fixed categories, null shown as ``"untagged"`` as in
    pandas (:data:`UNTAGGED`).
    """
    pl: Any = _polars()
    names = list(COLUMNS) if columns is None else list(columns)
    schema = pa.schema([SESSIONS_SCHEMA.field(name) for name in names])
    frame = pl.from_arrow(table.select(names).cast(schema), rechunk=False)
    tags = [
        pl.col(name).fill_null(UNTAGGED).cast(pl.Enum(list(CATEGORIES[name])))
        for name in names
        if name in CATEGORIES
    ]
    return frame.with_columns(tags) if tags else frame


def conversations_to_polars(table: pa.Table) -> Any:
    """Convert a conversations table to a Polars DataFrame (the pandas form's columns)."""
    pl: Any = _polars()
    return pl.from_arrow(table, rechunk=False)
