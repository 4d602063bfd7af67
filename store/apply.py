"""Apply: committed source transactions into one RocksDB WriteBatch per commit group.

`Applier` turns decoded row changes into mirror writes. It keeps one open group: a WriteBatch
plus an overlay (mirror key -> row bytes, or None for deleted) so that a change later in the
group sees the rows that earlier changes of the same group wrote but that are not yet in
RocksDB. `commit_group` writes the batch, with the applied LSN and row counts, in one synced
write; `discard_group` forgets it (after a dropped connection the stream is replayed from the
last synced LSN, so nothing is lost).

Contract: the caller feeds whole transactions in commit order and calls `end_transaction` at each
Commit. A group is only ever written at a transaction boundary, so the store never holds part of
a transaction. Transactions at or below the applied LSN must be skipped by the caller; the
applier does not re-check per row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from viewstore.errors import UnsupportedError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgoutput import UNCHANGED, Value
from viewstore.store import db as meta
from viewstore.store.codec import decode_row, encode_row
from viewstore.store.db import Store, TableInfo


class TableState:
    """What the applier needs per table in the hot loop, precomputed once."""

    __slots__ = ("info", "key_positions", "ncols", "prefix", "single_key")

    def __init__(self, info: TableInfo) -> None:
        self.info = info
        self.prefix = info.prefix
        self.key_positions = info.key_positions
        self.ncols = len(info.columns)
        self.single_key = self.key_positions[0] if len(self.key_positions) == 1 else -1

    def key(self, values: Sequence[Value]) -> bytes:
        """The mirror key of a row given as a tuple of text values in column order."""
        if self.single_key >= 0:
            kv = values[self.single_key]
            if kv is UNCHANGED:
                self._toasted_key()
            return self.prefix + encode_row((kv,))  # type: ignore[arg-type]
        kvs = tuple(values[i] for i in self.key_positions)
        if UNCHANGED in kvs:
            self._toasted_key()
        return self.prefix + encode_row(kvs)  # type: ignore[arg-type]

    def _toasted_key(self) -> None:
        raise UnsupportedError(
            f"table {self.info.qualified}: a key column arrived as an unchanged TOAST value, "
            "so the row cannot be identified",
            hint="keep primary key columns small (STORAGE MAIN/PLAIN) or use REPLICA IDENTITY FULL",
        )


class Applier:
    """Writes mirror changes of consecutive transactions into one group WriteBatch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mirror_cf = store.cf["mirror"]
        self._mirror_get = store.mirror.get
        self.tables: dict[str, TableState] = {
            name: TableState(info) for name, info in store.tables().items()
        }
        self.counts: dict[int, int] = {
            t.info.table_id: store.row_count(t.info) for t in self.tables.values()
        }
        self.committed_counts = dict(self.counts)
        self.applied_lsn = store.applied_lsn()  # of the last transaction ended, synced or not
        self.synced_lsn = self.applied_lsn  # durable in RocksDB
        self.applied_time = store.applied_time()
        self.stats = store.stats() or {"transactions": 0, "rows": 0}
        self._reset_group()

    def close(self) -> None:
        """Drop every RocksDB handle: rocksdict keeps the database (and its lock) open while
        any handle lives, and a traceback can keep this object alive long after."""
        self.batch = None  # type: ignore[assignment]
        self.mirror_cf = None
        self._mirror_get = None  # type: ignore[assignment]

    # -- group lifecycle -------------------------------------------------------------------

    def _reset_group(self) -> None:
        self.batch = self.store.new_batch()
        self.overlay: dict[bytes, bytes | None] = {}
        self.truncated: set[bytes] = set()
        self.group_rows = 0
        self.group_txns = 0
        self.group_started = 0.0
        self.dirty_counts: set[int] = set()

    @property
    def group_pending(self) -> bool:
        """True when ended transactions wait in the group for a synced write."""
        return self.group_txns > 0

    def commit_group(self) -> Lsn:
        """Write the group (mirror rows, counts, applied LSN) in one synced write."""
        if self.group_txns == 0 and self.group_rows == 0:
            return self.synced_lsn
        batch = self.batch
        for table_id in self.dirty_counts:
            meta.put_row_count(batch, self.store, table_id, self.counts[table_id])
        meta.put_applied(batch, self.store, self.applied_lsn, self.applied_time)
        self.stats["transactions"] += self.group_txns
        self.stats["rows"] += self.group_rows
        meta.put_json(batch, self.store, meta.STATS, self.stats)
        self.store.write(batch, sync=True)
        self.synced_lsn = self.applied_lsn
        self.committed_counts = dict(self.counts)
        self._reset_group()
        return self.synced_lsn

    def discard_group(self) -> None:
        """Forget everything not yet written: the stream will resend it from `synced_lsn`."""
        self.applied_lsn = self.synced_lsn
        self.counts = dict(self.committed_counts)
        self._reset_group()

    def record_progress(self, lsn: Lsn) -> None:
        """Persist an idle position (no transaction in flight, nothing pending) and sync it."""
        assert self.group_txns == 0 and self.group_rows == 0
        if lsn <= self.synced_lsn:
            return
        batch = self.store.new_batch()
        meta.put_applied(batch, self.store, lsn, None)
        self.store.write(batch, sync=True)
        self.applied_lsn = self.synced_lsn = lsn

    def end_transaction(self, end_lsn: Lsn, commit_time: int) -> None:
        """Close a transaction: its changes are in the group, its end LSN is the group's."""
        self.applied_lsn = end_lsn
        self.applied_time = commit_time
        self.group_txns += 1

    # -- row changes -----------------------------------------------------------------------

    def _start(self) -> None:
        if self.group_rows == 0:
            self.group_started = time.monotonic()

    def get_row(self, key: bytes) -> bytes | None:
        """The row at a mirror key as of everything fed so far (group included)."""
        try:
            return self.overlay[key]
        except KeyError:
            pass
        if self.truncated and key[:4] in self.truncated:
            return None
        return self._mirror_get(key)

    def insert(self, table: TableState, new: Sequence[Value]) -> None:
        key = table.key(new)
        data = encode_row(new)  # type: ignore[arg-type]
        self.overlay[key] = data
        self.batch.put(key, data, self.mirror_cf)
        tid = table.info.table_id
        self.counts[tid] += 1
        self.dirty_counts.add(tid)
        self.group_rows += 1

    def update(
        self,
        table: TableState,
        old_kind: str | None,
        old: Sequence[Value] | None,
        new: Sequence[Value],
    ) -> None:
        old_key = table.key(old) if old is not None else None
        if UNCHANGED in new:
            new = self._fill_unchanged(table, old_kind, old, new, old_key)
        key = table.key(new)
        data = encode_row(new)  # type: ignore[arg-type]
        if old_key is not None and old_key != key:
            self.overlay[old_key] = None
            self.batch.delete(old_key, self.mirror_cf)
        self.overlay[key] = data
        self.batch.put(key, data, self.mirror_cf)
        self.group_rows += 1

    def delete(self, table: TableState, old: Sequence[Value]) -> None:
        key = table.key(old)
        self.overlay[key] = None
        self.batch.delete(key, self.mirror_cf)
        tid = table.info.table_id
        self.counts[tid] -= 1
        self.dirty_counts.add(tid)
        self.group_rows += 1

    def truncate(self, table: TableState) -> None:
        prefix = table.prefix
        end = (table.info.table_id + 1).to_bytes(4, "big")
        self.batch.delete_range(prefix, end, self.mirror_cf)
        for key in [k for k in self.overlay if k.startswith(prefix)]:
            del self.overlay[key]
        self.truncated.add(prefix)
        tid = table.info.table_id
        self.counts[tid] = 0
        self.dirty_counts.add(tid)
        self.group_rows += 1

    def _fill_unchanged(
        self,
        table: TableState,
        old_kind: str | None,
        old: Sequence[Value] | None,
        new: Sequence[Value],
        old_key: bytes | None,
    ) -> tuple[Value, ...]:
        """Replace unchanged-TOAST markers with the values the row had before the update."""
        if old_kind == "O" and old is not None and UNCHANGED not in old:
            source: Sequence[Value] | None = old
        else:
            data = self.get_row(old_key if old_key is not None else table.key(new))
            source = None if data is None else decode_row(data)
        if source is None or len(source) != len(new):
            raise UnsupportedError(
                f"table {table.info.qualified}: an update left a TOASTed value unchanged and "
                "the mirror has no previous row to take it from",
                hint="the mirror is out of step with Postgres; rebuild it with `viewstore run "
                "--resnapshot`",
            )
        return tuple(s if v is UNCHANGED else v for v, s in zip(new, source, strict=True))

    # -- snapshot loading ------------------------------------------------------------------

    def load_row(self, table: TableState, row: Sequence[bytes | None]) -> None:
        """Put a snapshot row: like insert, without the overlay (snapshot keys are unique)."""
        self.batch.put(table.key(row), encode_row(row), self.mirror_cf)
        self.counts[table.info.table_id] += 1
        self.dirty_counts.add(table.info.table_id)
        self.group_rows += 1

    def write_chunk(self) -> None:
        """Write what the group holds without sync (snapshot loading: durability comes with the
        synced completion marker, and an unfinished snapshot is thrown away on restart)."""
        for table_id in self.dirty_counts:
            meta.put_row_count(self.batch, self.store, table_id, self.counts[table_id])
        self.store.write(self.batch, sync=False)
        self.committed_counts = dict(self.counts)
        self._reset_group()
