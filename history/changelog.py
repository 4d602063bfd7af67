"""Change log: every change of every view, keyed by the commit LSN of its transaction.

Column family `history`, written in the same WriteBatch as the view rows it describes, holds
two orderings of the same entries (the layout is encoded and decoded in `history.keys` only):

    c  view id (2)  commit LSN (8)  sequence (4)  ->  [output key, before, after, time, xid]
    k  view id (2)  output key      commit LSN (8)  ->  the row after (empty: deleted)

`c` is the log in commit order: "everything after LSN X" is a range scan. `k` is the history
of each view row: "row K as of LSN X" is one backward seek. The rows are `codecs.value` field lists
(None: the row did not exist before, or no longer does after); time is the commit timestamp in
µs since the Unix epoch, xid the source transaction id. Within a transaction the sequence
numbers follow the order the engine wrote the rows in, which depends only on the transaction and
the state before it: a replay after a crash writes byte-identical entries (DESIGN.md promise 4).

A transaction's commit LSN here is the *end* of its commit record (pgoutput's Commit
end_lsn), not its start (the Begin's final_lsn). The end is where the transaction becomes
visible: Postgres's pg_current_wal_lsn() after COMMIT is at or past it, an exported snapshot at
LSN L holds exactly the transactions whose commit records end at or before L, and it is the LSN
the store reports as applied. With the start, the next transaction's commit record can begin
exactly at the applied LSN, so "everything at or before the applied LSN" would not be final.
With the end it is: any later transaction ends after it.

A view's build from the mirror writes every row it starts with at the LSN it was built at, so
the history of every row is complete from then on. "As of LSN X" means after every transaction
whose commit record ends at or before X.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from viewstore.codecs.key import prefix_end
from viewstore.codecs.value import pack_change, unpack_fields
from viewstore.codecs.valuecolumns import ValueChunk, python_rows
from viewstore.history import checkpoint
from viewstore.history.access import HistoryStore
from viewstore.history.keys import (
    DELETED,
    change_key,
    change_key_parts,
    change_lsn_prefix,
    change_prefix,
    is_row_key_of,
    row_history_key,
    row_key_lsn_suffix,
    row_key_prefix,
)
from viewstore.ingest.lsn import Lsn

__all__ = [
    "DELETED",
    "Change",
    "change_key",
    "changes",
    "entries",
    "images_as_of",
    "row_as_of",
    "rows_as_of",
]


def _row(data: bytes) -> tuple[Any, ...]:
    """A view row as the engine stores it (a `codecs.value` field list), as a tuple."""
    return tuple(unpack_fields(data))


def entries(
    view_id: int,
    commit_lsn: int,
    seq: int,
    okey: bytes,
    before: bytes | None,
    after: bytes | None,
    commit_time: int | None,
    xid: int | None,
) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """The two (key, value) pairs that record one changed row."""
    return (
        (
            change_key(view_id, commit_lsn, seq),
            pack_change(okey, before, after, commit_time, xid),
        ),
        (row_history_key(view_id, okey, commit_lsn), DELETED if after is None else after),
    )


@dataclass(frozen=True)
class Change:
    """One output row of one view changed by the transaction committed at `lsn`."""

    view_id: int
    lsn: Lsn
    seq: int
    key: bytes
    before: tuple[Any, ...] | None
    after: tuple[Any, ...] | None
    commit_time: int | None  # µs since the Unix epoch
    xid: int | None

    @property
    def op(self) -> str:
        return change_op(self.before is None, self.after is None, self.xid)


def change_op(no_before: bool, no_after: bool, xid: int | None) -> str:
    """'initial' for a row a view started with (its build, which has no transaction), else
    'insert', 'update' or 'delete'."""
    if xid is None:
        return "initial"
    return "insert" if no_before else "delete" if no_after else "update"


def _pending(store: HistoryStore, key: bytes) -> bool:
    # Entries of a large transaction still being written are not history yet.
    return store.pending_history(key)


def changes(
    store: HistoryStore,
    view_id: int,
    since: int = 0,
    until: int | None = None,
    *,
    reverse: bool = False,
) -> Iterator[Change]:
    """The view's changes with since <= commit LSN <= until, oldest first (or newest first)."""
    low = change_key(view_id, since, 0)
    high = prefix_end(change_lsn_prefix(view_id, until)) if until is not None else None
    end = prefix_end(change_prefix(view_id))
    high = end if high is None or high > end else high
    it = store.history.iter()
    if reverse:
        it.seek_for_prev(high)
    else:
        it.seek(low)
    while it.valid():
        key = it.key()
        if key >= high:
            if not reverse:
                break
            it.prev()  # seek_for_prev may land on `high` itself
            continue
        if key < low:
            break
        if not _pending(store, key):
            _, lsn, seq = change_key_parts(key)
            okey, before, after, commit_time, xid = unpack_fields(it.value())
            yield Change(
                view_id,
                Lsn(lsn),
                seq,
                okey,
                None if before is None else _row(before),
                None if after is None else _row(after),
                commit_time,
                xid,
            )
        if reverse:
            it.prev()
        else:
            it.next()


def row_as_of(store: HistoryStore, view_id: int, okey: bytes, lsn: int) -> tuple[Any, ...] | None:
    """The view's row with output key `okey` as of `lsn` (None: there was none): one seek."""
    prefix = row_key_prefix(view_id, okey)
    it = store.history.iter()
    it.seek_for_prev(prefix + row_key_lsn_suffix(lsn))
    while it.valid():
        key = it.key()
        if not is_row_key_of(key, prefix):
            return None
        if _pending(store, key):
            it.prev()
            continue
        value = it.value()
        return None if value == DELETED else _row(value)
    return None


def rows_as_of(store: HistoryStore, view_id: int, lsn: int) -> dict[bytes, tuple[Any, ...]]:
    """Output key -> row of the view as of `lsn`.

    The newest checkpoint at or before `lsn` (`history.checkpoint`) with the view's changes
    after it up to `lsn` applied: about as many changes as the view has rows at most, whatever
    the length of the history, decoded a column at a time. A view with no checkpoint by then is
    folded from the start of its history, unless that is much longer than the view (a store
    whose history predates checkpoints): then one seek per row key (`_rows_by_seeks`).
    """
    base = checkpoint.latest(store, view_id, lsn)
    if base is not None:
        keys, rows = _checkpoint_images(store, view_id, base, lsn)
        decoded = python_rows(rows)
        if decoded is None:
            decoded = [_row(v) for v in rows.to_pylist()]
        return dict(zip(keys.to_pylist(), decoded, strict=True))
    raw: dict[bytes, bytes | None] | None = _fold(store, view_id, {}, 0, lsn)
    if raw is None:
        return _rows_by_seeks(store, view_id, lsn)
    okeys = [k for k, v in raw.items() if v is not None]
    values = [raw[k] for k in okeys]
    found = python_rows(values) if len(values) >= _COLUMNAR else None
    if found is None:
        found = [_row(v) for v in values]  # type: ignore[arg-type]
    return dict(zip(okeys, found, strict=True))


def images_as_of(store: HistoryStore, view_id: int, lsn: int) -> tuple[Any, Any]:
    """(output keys, rows) of the view as of `lsn`, as two Arrow binary arrays in no
    particular order, the rows not decoded (`codecs.value` field lists): what `rows_as_of`
    reads, for a reader that decodes only some of them (the top N of a million-row view as of
    an LSN)."""
    import pyarrow as pa

    base = checkpoint.latest(store, view_id, lsn)
    if base is not None:
        return _checkpoint_images(store, view_id, base, lsn)
    raw = _fold(store, view_id, {}, 0, lsn)
    if raw is None:
        raw = _raw_by_seeks(store, view_id, lsn)
    okeys = [k for k, v in raw.items() if v is not None]
    values = [raw[k] for k in okeys]
    return pa.array(okeys, pa.binary()), pa.array(values, pa.binary())


def _checkpoint_images(store: HistoryStore, view_id: int, base: int, lsn: int) -> tuple[Any, Any]:
    """The checkpoint at `base` with the view's changes in (base, lsn] applied, as Arrow."""
    keys, rows = checkpoint.arrays(store, view_id, base)
    values = _log_values(store, view_id, base + 1, lsn)
    if values:
        chunk = ValueChunk(values)
        okey, _, after, _, _ = chunk.top_fields(5)
        keys, rows = checkpoint.apply(keys, rows, chunk.binary(okey), chunk.binary(after))
    return keys, rows


# Below this many rows or changes, numpy's fixed cost outweighs decoding one by one.
_COLUMNAR = 64
# A fold from the start of a history with no checkpoint goes on while it has read fewer than
# this many changes per distinct row (plus a floor): one seek per row key costs about as much.
_FOLD_PER_ROW = 32
_FOLD_FLOOR = 50_000
_CHUNK = 100_000


def _log_values(store: HistoryStore, view_id: int, since: int, lsn: int) -> list[bytes]:
    """The values of the view's log entries with since <= commit LSN <= lsn, in commit order
    (a large transaction's entries still being written left out)."""
    low = change_key(view_id, since, 0)
    high = min(prefix_end(change_lsn_prefix(view_id, lsn)), prefix_end(change_prefix(view_id)))
    if low >= high:
        return []
    if not store.large_txn_pending:
        return store.history_range(low, high, values=True)
    keys = store.history_range(low, high)
    values = store.history_range(low, high, values=True)
    return [v for k, v in zip(keys, values, strict=True) if not _pending(store, k)]


def _fold(
    store: HistoryStore, view_id: int, raw: dict[bytes, bytes | None], since: int, lsn: int
) -> dict[bytes, bytes | None] | None:
    """Fold the view's changes with since <= commit LSN <= lsn over `raw` (output key -> row
    bytes, None: deleted), in commit order; None once it has read more changes than
    `_FOLD_PER_ROW` per distinct row (and `_FOLD_FLOOR`): seeks are cheaper then."""
    low = change_key(view_id, since, 0)
    high = min(prefix_end(change_lsn_prefix(view_id, lsn)), prefix_end(change_prefix(view_id)))
    read = 0
    while low < high:
        keys = store.history_range(low, high, _CHUNK)
        if not keys:
            break
        last = keys[-1]
        values = store.history_range(low, prefix_end(last), values=True)
        if store.large_txn_pending:  # a large transaction being written: not history yet
            values = [v for k, v in zip(keys, values, strict=True) if not _pending(store, k)]
        _fold_values(raw, values)
        read += len(values)
        if len(keys) < _CHUNK:
            break
        if read > len(raw) * _FOLD_PER_ROW + _FOLD_FLOOR:
            return None
        low = prefix_end(last)
    return raw


def _fold_values(raw: dict[bytes, bytes | None], values: list[bytes]) -> None:
    """Fold change-log values (`pack_change`) into `raw`: each row's image after it."""
    if len(values) >= _COLUMNAR:
        chunk = ValueChunk(values)
        okey, _, after, _, _ = chunk.top_fields(5)
        okeys, afters = chunk.binary(okey).to_pylist(), chunk.binary(after).to_pylist()
        raw.update(zip(okeys, afters, strict=True))
        return
    for value in values:
        fields = unpack_fields(value)
        raw[fields[0]] = fields[2]


def _rows_by_seeks(store: HistoryStore, view_id: int, lsn: int) -> dict[bytes, tuple[Any, ...]]:
    """`rows_as_of` by one backward seek per row key the view has ever had (a skip scan of the
    `k` ordering): what a history with no checkpoint before `lsn` is read with."""
    return {okey: _row(value) for okey, value in _raw_by_seeks(store, view_id, lsn).items()}


def _raw_by_seeks(store: HistoryStore, view_id: int, lsn: int) -> dict[bytes, bytes]:
    """Output key -> row as stored, of `_rows_by_seeks`."""
    rows: dict[bytes, bytes] = {}
    base = row_key_prefix(view_id)
    end = prefix_end(base)
    target = row_key_lsn_suffix(lsn)
    large = store.large_txn_pending  # once, not per row key: it is a metadata read
    it = store.history.iter()
    it.seek(base)
    while it.valid():
        key = it.key()
        if key >= end:
            break
        okey = key[len(base) : -8]  # the first entry of the next row key
        prefix = base + okey
        it.seek_for_prev(prefix + target)
        while large and it.valid() and it.key().startswith(prefix) and _pending(store, it.key()):
            it.prev()
        if it.valid() and is_row_key_of(it.key(), prefix):
            value = it.value()
            if value != DELETED:
                rows[okey] = value
        it.seek(prefix_end(prefix))
    return rows
