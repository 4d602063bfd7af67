"""Checkpoints: every row of a view as of an LSN, so that as-of reads do not grow with history.

Without them, a whole view as of LSN X is one backward seek per row key the view ever had (the
`k` ordering, `changelog`): 4.1 s for a 100k-row view at 10M entries (issue 15). A checkpoint
holds the view's rows as of one LSN C, in output-key order (one range read), and a marker:

    p  view id (2)  C (8)              ->  its number of rows (8)
    s  view id (2)  C (8)  output key  ->  the row as of C (a `codecs.value` field list)

The view as of X is then the newest checkpoint at or before X with the view's changes in (C, X]
from the log (`c`) folded over it (`changelog.rows_as_of`). The store writes a view's next
checkpoint once the view has changed `max(min_interval, rows it has)` times since its last one:
a read folds at most about as many changes as the view has rows, and the checkpoints cost at
most one row written per change, amortised (the log itself writes two entries per change).

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

__all__ = ["changes_after_latest", "drop_before", "latest", "lsns", "put", "rows"]

_U64 = struct.Struct(">Q")


def put(
    batch: Any, cf: Any, view_id: int, lsn: int, view_rows: Iterable[tuple[bytes, bytes]]
) -> int:
    """Put the checkpoint of a view at `lsn` into `batch`: `view_rows`, (output key, row) of
    every row the view has as of `lsn`, then the marker. Returns the number of rows."""
    prefix = checkpoint_prefix(view_id, lsn)
    n = 0
    add = batch.put
    for okey, row in view_rows:
        add(prefix + okey, row, cf)
        n += 1
    add(checkpoint_marker(view_id, lsn), _U64.pack(n), cf)
    return n


def latest(store: HistoryStore, view_id: int, lsn: int) -> int | None:
    """The LSN of the view's newest checkpoint at or before `lsn` (None: it has none)."""
    it = store.history.iter()
    marker = checkpoint_marker(view_id, lsn)
    it.seek_for_prev(marker)
    if it.valid() and it.key()[:3] == marker[:3]:
        return checkpoint_lsn(it.key())
    return None


def lsns(store: HistoryStore, view_id: int) -> list[int]:
    """The LSNs of the view's checkpoints, oldest first."""
    low = checkpoint_marker(view_id, 0)
    return [checkpoint_lsn(k) for k in store.history_range(low, prefix_end(low[:3]))]


def rows(store: HistoryStore, view_id: int, lsn: int) -> dict[bytes, bytes]:
    """Output key -> row (as stored) of the view's checkpoint at `lsn`: two range reads."""
    low = checkpoint_prefix(view_id, lsn)
    high = prefix_end(low)
    keys = store.history_range(low, high)
    values = store.history_range(low, high, values=True)
    n = len(low)
    return dict(zip([k[n:] for k in keys], values, strict=True))


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
    return len(store.history_range(low, prefix_end(change_prefix(view_id)), limit))
