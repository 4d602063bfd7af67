"""The top N of a view's rows given as Arrow arrays, without decoding every row.

The rows (as of an LSN, from `changelog.images_as_of`) are two Arrow binary arrays: output keys
and row images (`codecs.value` field lists). For a number column, the ordered column alone is
read out of every row (`codecs.valuecolumns`, no Python object per row) as float64, which
orders as the exact values do except that distinct values may round to one float: every row
whose float is at least the N-th largest (at most, ascending) is a candidate, and only those
are decoded and sorted exactly. A row left out has N candidates strictly above it in float
order, so strictly above it exactly too. Ties in the float (all totals 0, say) make more
candidates, at worst all. For other column types every row is decoded and sorted.

Ordering is `viewread`'s: Postgres's defaults (ASC NULLS LAST, DESC NULLS FIRST), ties by the
view's key. The time scrubber's top N (`asofread`) and `query(..., as_of=, order_by=, limit=)`
(`viewread`) use it.
"""

from __future__ import annotations

from typing import Any

from viewstore.codecs.key import encode_value
from viewstore.codecs.value import unpack_fields
from viewstore.codecs.valuecolumns import ValueChunk
from viewstore.errors import StoreError


def top_images(
    keys: Any, images: Any, column: int, desc: bool, limit: int
) -> list[tuple[bytes, tuple[Any, ...]]]:
    """The first `limit` of (output key, row) pairs given as Arrow binary arrays (rows as
    `codecs.value` field lists), ordered by field `column` (Postgres's order, NULLS LAST
    ascending, FIRST descending), ties by output key ascending."""
    import numpy as np

    n = len(keys)
    if n == 0 or limit <= 0:
        return []
    approx = _approx_column(images, column) if n > limit else None
    if approx is None:
        picked: Any = None
    elif desc:
        bound = np.partition(approx, n - limit)[n - limit]
        picked = np.flatnonzero(approx >= bound)
    else:
        bound = np.partition(approx, limit - 1)[limit - 1]
        picked = np.flatnonzero(approx <= bound)
    if picked is not None:
        keys, images = keys.take(picked), images.take(picked)
    found = sorted(zip(keys.to_pylist(), map(_row, images.to_pylist()), strict=True))
    found.sort(key=lambda kr: encode_value(kr[1][column]), reverse=desc)
    return found[:limit]


def _row(image: bytes) -> tuple[Any, ...]:
    return tuple(unpack_fields(image))


_NUMBER_TAGS = {ord("i"), ord("d")}


def _approx_column(images: Any, column: int) -> Any:
    """Field `column` of every row as float64 (numpy), in the exact values' order, NULL and
    NaN as +inf (both sort after every number); None unless it is a number column whose
    values are all integers and numerics, or all floats."""
    import numpy as np
    import pyarrow as pa

    width = len(unpack_fields(images[0].as_py()))
    if column >= width:
        return None
    chunk = ValueChunk.from_arrow(images)
    try:
        field = chunk.top_fields(width)[column]
    except StoreError:
        return None  # rows of differing widths: decoded one by one
    tags = field.tags()
    if tags and tags <= _NUMBER_TAGS:
        try:
            floats = chunk.binary(field, pa.string()).cast(pa.float64())
        except pa.ArrowException:
            return None
    elif tags == {ord("f")}:
        floats = chunk.float64(field)
    else:
        return None
    out = floats.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls: NaN
    out[np.isnan(out)] = np.inf
    return out
