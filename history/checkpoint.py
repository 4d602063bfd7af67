"""Checkpoints: every row of a view as of an LSN, so that as-of reads do not grow with history.

Without them, a whole view as of LSN X is one backward seek per row key the view ever had (the
`k` ordering, `changelog`): 4.1 s for a 100k-row view at 10M entries (issue 15). A checkpoint
holds the view's rows as of one LSN C, in output-key order (one range read), and a marker:

    p  view id (2)  C (8)             ->  its number of rows (8)
    s  view id (2)  C (8)  block (4)  ->  up to BLOCK_ROWS rows as of C, in output-key order

A block holds its rows a column at a time, so that a reader takes them as two Arrow binary
arrays without a Python object per row (issue 15: a whole 100k-row view in <= 0.3 s):

    n (u32 LE) | key offsets (n + 1 x i32 LE) | row offsets (n + 1 x i32 LE) | keys | rows

(offsets from the start of the keys, or of the rows; a row is a `codecs.value` field list).

The view as of X is then the newest checkpoint at or before X with the view's changes in (C, X]
from the log (`c`) applied to it, the last change of each row winning (`changelog.rows_as_of`).
The store writes a view's next checkpoint once the view has changed `max(min_interval, rows it
has)` times since its last one: a read applies at most about as many changes as the view has
rows, and the checkpoints cost at most one row written per change, amortised (the log itself
writes two entries per change).

Written with the log, kill -9 safe: the rows are the view's rows as the store holds them after
its last synced commit group (C is that group's LSN), and they go into the next commit group's
WriteBatch with the marker: one synced write holds all of a checkpoint or none of it. A reader
takes only checkpoints with a marker. They hold nothing the log does not: deleting them changes
no answer, only its speed (a view without one is read from the start of its history).

Retention (`history.retention`) drops the changes of the log that no read at or after its cutoff
needs, which a checkpoint before the cutoff would need: compaction deletes those checkpoints in
the same batch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from viewstore.codecs.key import prefix_end
from viewstore.history.access import HistoryStore
from viewstore.history.keys import (
    change_key,
    change_prefix,
    checkpoint_lsn,
    checkpoint_marker,
    checkpoint_prefix,
)

__all__ = [
    "apply",
    "arrays",
    "changes_after_latest",
    "drop_before",
    "latest",
    "lsns",
    "put",
    "row_count",
]

BLOCK_ROWS = 1024
_BLOCK_BYTES = 64 << 20  # a block ends sooner if its rows are this large (offsets are i32)
_U32 = struct.Struct("<I")
_U64 = struct.Struct(">Q")


def put(
    batch: Any, cf: Any, view_id: int, lsn: int, view_rows: Iterable[tuple[bytes, bytes]]
) -> int:
    """Put the checkpoint of a view at `lsn` into `batch`: `view_rows`, (output key, row) of
    every row the view has as of `lsn` in output-key order, then the marker. Returns the
    number of rows."""
    prefix = checkpoint_prefix(view_id, lsn)
    n = block = size = 0
    keys: list[bytes] = []
    rows: list[bytes] = []
    for okey, row in view_rows:
        keys.append(okey)
        rows.append(row)
        size += len(okey) + len(row)
        if len(keys) == BLOCK_ROWS or size >= _BLOCK_BYTES:
            batch.put(prefix + block.to_bytes(4, "big"), _block(keys, rows), cf)
            n, block, size, keys, rows = n + len(keys), block + 1, 0, [], []
    if keys:
        batch.put(prefix + block.to_bytes(4, "big"), _block(keys, rows), cf)
        n += len(keys)
    batch.put(checkpoint_marker(view_id, lsn), _U64.pack(n), cf)
    return n


def _block(keys: list[bytes], rows: list[bytes]) -> bytes:
    import numpy as np

    def offsets(parts: list[bytes]) -> bytes:
        out = np.zeros(len(parts) + 1, "<i4")
        np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=out[1:])
        return out.tobytes()

    return b"".join((_U32.pack(len(keys)), offsets(keys), offsets(rows), *keys, *rows))


def latest(store: HistoryStore, view_id: int, lsn: int) -> int | None:
    """The LSN of the view's newest checkpoint at or before `lsn` (None: it has none)."""
    it = store.history.iter()
    marker = checkpoint_marker(view_id, lsn)
    it.seek_for_prev(marker)
    if it.valid() and it.key()[:3] == marker[:3]:
        return checkpoint_lsn(it.key())
    return None


def row_count(store: HistoryStore, view_id: int, lsn: int) -> int:
    """The number of rows of the view's checkpoint at `lsn` (its marker says)."""
    data = store.history.get(checkpoint_marker(view_id, lsn))
    return 0 if data is None else _U64.unpack(data)[0]


def lsns(store: HistoryStore, view_id: int) -> list[int]:
    """The LSNs of the view's checkpoints, oldest first."""
    low = checkpoint_marker(view_id, 0)
    return [checkpoint_lsn(k) for k in store.history_range(low, prefix_end(low[:3]))]


def arrays(store: HistoryStore, view_id: int, lsn: int) -> tuple[Any, Any]:
    """(output keys, rows) of the view's checkpoint at `lsn`, as two Arrow binary arrays in
    output-key order: one range read, no Python object per row."""
    import numpy as np
    import pyarrow as pa

    low = checkpoint_prefix(view_id, lsn)
    keys, rows = [], []
    for block in store.history_range(low, prefix_end(low), values=True):
        n = _U32.unpack_from(block)[0]
        head = 4 + 8 * (n + 1)
        offsets = np.frombuffer(block, "<i4", 2 * (n + 1), 4)
        key_end = head + int(offsets[n])
        buf = pa.py_buffer(block)
        key_offsets, row_offsets = pa.py_buffer(offsets[: n + 1]), pa.py_buffer(offsets[n + 1 :])
        keys.append(pa.Array.from_buffers(pa.binary(), n, [None, key_offsets, buf.slice(head)]))
        rows.append(pa.Array.from_buffers(pa.binary(), n, [None, row_offsets, buf.slice(key_end)]))
    if not keys:
        return pa.array([], pa.binary()), pa.array([], pa.binary())
    return pa.concat_arrays(keys), pa.concat_arrays(rows)


def rows(store: HistoryStore, view_id: int, lsn: int) -> dict[bytes, bytes]:
    """Output key -> row (as stored) of the view's checkpoint at `lsn`."""
    keys, values = arrays(store, view_id, lsn)
    return dict(zip(keys.to_pylist(), values.to_pylist(), strict=True))


def apply(keys: Any, rows: Any, change_keys: Any, afters: Any) -> tuple[Any, Any]:
    """(output keys, rows) of a checkpoint's Arrow arrays with changes applied: `change_keys`
    and `afters` (null: the row was deleted) in commit order, the last change of a row
    winning. The result is in no particular order."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(change_keys):
        return keys, rows
    order = pa.array(np.arange(len(change_keys), dtype=np.int64))
    last = pa.table({"k": change_keys, "i": order}).group_by("k").aggregate([("i", "max")])
    picks = last["i_max"].combine_chunks()
    kept = pc.invert(pc.is_in(keys, value_set=last["k"].combine_chunks()))
    new_keys, new_rows = change_keys.take(picks), afters.take(picks)
    alive = pc.is_valid(new_rows)
    return (
        pa.concat_arrays([keys.filter(kept), new_keys.filter(alive).cast(keys.type)]),
        pa.concat_arrays([rows.filter(kept), new_rows.filter(alive).cast(rows.type)]),
    )


def drop_before(batch: Any, cf: Any, view_id: int, cutoff: int) -> None:
    """Delete the view's checkpoints at LSNs before `cutoff` (retention: the log no longer
    holds every change after them)."""
    for key in (checkpoint_marker, checkpoint_prefix):
        batch.delete_range(key(view_id, 0), key(view_id, cutoff), cf)


def changes_after_latest(store: HistoryStore, view_id: int, limit: int) -> int:
    """How many changes the view's log holds after its newest checkpoint (after its start if
    it has none), counting up to `limit`: where a restarted store's count picks up."""
    base = latest(store, view_id, (1 << 64) - 1)
    low = change_key(view_id, 0 if base is None else base + 1, 0)
    high = prefix_end(change_prefix(view_id))
    n = 0
    while n < limit:  # a chunk of keys at a time: a big view's limit is millions
        keys = store.history_range(low, high, min(limit - n, 100_000))
        n += len(keys)
        if not keys:
            break
        low = prefix_end(keys[-1])
    return n
