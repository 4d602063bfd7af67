"""Change log: every change of every view, keyed by the commit LSN of its transaction.

Column family `history`, written in the same WriteBatch as the view rows it describes:

    view id (2)  commit LSN (8)  sequence (4)  ->  fields [output key, before row, after row]

The rows are `valuecodec` field lists (None when the row did not exist before, or no longer
does after). Within a transaction the sequence numbers follow the order the engine wrote the
rows in, which depends only on the transaction and the state before it: a replay after a crash
writes byte-identical entries (DESIGN.md promise 4).

A view as of LSN L is its current rows with every change of a transaction that committed at or
after L undone, newest first (`rows_as_of`). A transaction is in the state "as of L" exactly when
its commit LSN is below L, which is also when its end LSN (what the store calls applied) is at
most L.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from viewstore.ingest.lsn import Lsn
from viewstore.store.db import UNDO_HISTORY, UNDO_VIEWS, Store, prefix_end
from viewstore.store.valuecodec import pack_fields, unpack_fields
from viewstore.store.viewengine import decode_output, view_prefix

_HEAD = struct.Struct(">HQI")


def change_key(view_id: int, commit_lsn: int, seq: int) -> bytes:
    return _HEAD.pack(view_id, commit_lsn, seq)


def encode_change(okey: bytes, before: bytes | None, after: bytes | None) -> bytes:
    return pack_fields([okey, before, after])


@dataclass(frozen=True)
class Change:
    """One output row of one view changed by the transaction committed at `lsn`."""

    view_id: int
    lsn: Lsn
    seq: int
    key: bytes
    before: tuple[Any, ...] | None
    after: tuple[Any, ...] | None


def changes(
    store: Store, view_id: int, since: int = 0, *, reverse: bool = False
) -> Iterator[Change]:
    """The view's changes with commit LSN >= `since`, oldest first (or newest first)."""
    start = _HEAD.pack(view_id, since, 0)
    end = prefix_end(_HEAD.pack(view_id, 0, 0)[:2])
    cf = store.history
    items = cf.items(from_key=end, backwards=True) if reverse else cf.items(from_key=start)
    for key, value in items:
        if key >= end:
            continue
        if key < start:
            break
        if _undone_by_large_txn(store, key):
            continue
        vid, lsn, seq = _HEAD.unpack_from(key)
        okey, before, after = unpack_fields(value)
        yield Change(
            vid,
            Lsn(lsn),
            seq,
            okey,
            None if before is None else decode_output(before),
            None if after is None else decode_output(after),
        )


def _undone_by_large_txn(store: Store, key: bytes) -> bool:
    # Entries of a large transaction still being written are not history yet.
    return store.large_txn_pending and store.undo.get(UNDO_HISTORY + key) is not None


def rows_as_of(store: Store, view_id: int, lsn: int) -> dict[bytes, tuple[Any, ...]]:
    """Output key -> row of the view as of `lsn`: the current rows with every change at or
    after `lsn` undone. The caller checks that the store has applied `lsn`."""
    rows: dict[bytes, tuple[Any, ...]] = {}
    prefix = view_prefix(view_id) + b"r"
    for key, data in store.committed(store.views, UNDO_VIEWS, prefix):
        rows[key[len(prefix) :]] = decode_output(data)
    for change in changes(store, view_id, lsn, reverse=True):
        if change.before is None:
            rows.pop(change.key, None)
        else:
            rows[change.key] = change.before
    return rows
