"""A run's batches into its one table: queries left out dropped, the rest in fetch order.

Rows go by the query they were fetched for (the ``_query`` column), not by their own
``conversation_uuid``: a server may send another one, and the conversations listing has none.
A query fetched anew (under a new index) takes back the place of the query it replaced.
:func:`mihu_frames.frame.finish` then joins the batches in that order, one row per ``uuid``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.frame import finish


def in_order(
    batches: list[pa.Table], gone: list[int], positions: np.ndarray | None, schema: pa.Schema
) -> pa.Table:
    """The one table of ``batches``, without the rows of queries ``gone``.

    Parameters
    ----------
    batches : list of pa.Table
        Decoded batches, with the ``_query`` and ``_page`` columns; emptied (let go as the
        table is built).
    gone : list of int
        Query indices whose rows are left out.
    positions : numpy array or None
        Per query index, the index whose place its rows take (None: every one its own).
    schema : pa.Schema
        The columns of a table of no rows.
    """
    taken = batches[:]
    batches.clear()
    if gone:
        dropped = pa.array(gone, pa.int64())
        taken = [t.filter(pc.invert(pc.is_in(t.column("_query"), dropped))) for t in taken]
    if positions is not None:
        position = pa.array(positions)
        taken = [
            t.set_column(
                t.schema.get_field_index("_query"), "_query", position.take(t.column("_query"))
            )
            for t in taken
        ]
    return finish(taken, schema)
