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

Large transactions. Memory must stay bounded whatever the size of a transaction, so a group
cannot hold one with millions of rows. When a transaction passes `large_txn_rows`, the applier
raises `LargeTransaction`; the caller discards the group and replays the stream from the synced
LSN, and calls `begin_large` when that transaction begins again, on an empty group. From then on
the transaction is written in unsynced chunks of `chunk_rows`, each with the before-images of
the rows it touches for the first time (the `undo` column family) and a `large_txn` marker; its
Commit writes counts, applied LSN and the removal of undo and marker in one synced write. A crash
in between is undone by `rollback_large_transaction` at the next start, and readers merge the
undo log (`Store.rows`), so nobody ever sees half of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from viewstore.codecs.row import decode_row, encode_row
from viewstore.errors import UnsupportedError
from viewstore.history import checkpoint
from viewstore.history.changelog import entries
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgoutput import UNCHANGED, Value
from viewstore.store import db as meta
from viewstore.store.db import (
    ALL_KEYS,
    UNDO_HISTORY,
    UNDO_MIRROR,
    UNDO_VIEWS,
    Store,
    TableInfo,
    decode_undo,
    encode_undo,
    scan,
)
from viewstore.store.engine import ActiveView, ViewEngine, count_key, row_count_of, view_prefix

log = logging.getLogger("viewstore")


class LargeTransaction(Exception):
    """The current transaction is too large for a group; replay it with `begin_large`."""


def rollback_large_transaction(store: Store) -> int:
    """Undo the chunks of a large transaction that a crash interrupted; returns rows restored.

    Idempotent: the undo log and marker go only in the last, synced write.
    """
    if store.meta.get(meta.LARGE_TXN) is None:
        return 0
    cfs = {
        UNDO_MIRROR: store.cf["mirror"],
        UNDO_VIEWS: store.cf["views"],
        UNDO_HISTORY: store.cf["history"],
    }
    n = 0
    batch = store.new_batch()
    for key, entry in store.undo.items():
        before = decode_undo(entry)
        cf, target = cfs[key[:1]], key[1:]
        if before is None:
            batch.delete(target, cf)
        else:
            batch.put(target, before, cf)
        n += 1
        if n % 50_000 == 0:
            store.write(batch, sync=False)
            batch = store.new_batch()
    batch.delete_range(*ALL_KEYS, store.cf["undo"])
    batch.delete(meta.LARGE_TXN, store.cf["meta"])
    store.write(batch, sync=True)
    return n


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

    def __init__(
        self,
        store: Store,
        *,
        large_txn_rows: int = 250_000,
        chunk_rows: int = 50_000,
        on_chunk: Callable[[str], None] | None = None,
        views: Sequence[ActiveView] = (),
        history: bool = True,
        checkpoint_interval: int = 10_000,
    ) -> None:
        self.store = store
        self.keep_history = history
        self.mirror_cf = store.cf["mirror"]
        self.views_cf = store.cf["views"]
        self.history_cf = store.cf["history"]
        self.undo_cf = store.cf["undo"]
        self._mirror_get = store.mirror.get
        self._undo_get = store.undo.get
        self.large_txn_rows = large_txn_rows
        self.chunk_rows = chunk_rows
        self.on_chunk = on_chunk
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
        # (commit LSN, xid, commit time) of the last transaction ended, and of the last synced
        self.last_commit = self.synced_last_commit = store.last_commit()
        self.stats = store.stats() or {"transactions": 0, "rows": 0}
        self.large = False  # writing a large transaction in chunks
        self.group_writes = 0  # synced group writes by this applier (tests read it)
        self.latency = (0, 0.0, 0.0)  # apply latency: groups, sum of seconds, the last one
        self.large_commit_lsn = Lsn(0)  # of the large transaction being written in chunks
        self.txn_rows = 0
        self._next_check = large_txn_rows
        # The views kept in the same batches as the mirror; `view_tables` are the tables whose
        # changes they need (with the old row, which the applier then reads from the mirror).
        self.engine = ViewEngine(views, store.views, self) if views else None
        self.commit_time_us: int | None = None
        self.xid: int | None = None
        self.history_seq = 0
        self.view_tables = self.engine.tables if self.engine is not None else frozenset()
        # History checkpoints (history.checkpoint): a view's next one is due once it has changed
        # max(checkpoint_interval, its rows) times since its last one; 0 turns them off.
        self.checkpoint_interval = checkpoint_interval if history else 0
        self.since_checkpoint: dict[int, int] = {}
        if self.checkpoint_interval:
            for view in views:
                due = max(self.checkpoint_interval, self._view_rows(view.view_id))
                n = checkpoint.changes_after_latest(store, view.view_id, due)
                self.since_checkpoint[view.view_id] = n
        self.checkpoints_written = 0  # by this applier (tests and benchmarks read it)
        self._reset_group()

    def close(self) -> None:
        """Drop every RocksDB handle: rocksdict keeps the database (and its lock) open while
        any handle lives, and a traceback can keep this object alive long after."""
        self.batch = None  # type: ignore[assignment]
        self.mirror_cf = self.undo_cf = self.views_cf = self.history_cf = None
        if self.engine is not None:
            self.engine.reset()  # its iterator, too, holds RocksDB open
        self.engine = None
        self._mirror_get = self._undo_get = None  # type: ignore[assignment]

    # -- group lifecycle -------------------------------------------------------------------

    def _reset_group(self, written: bool = False) -> None:
        self.batch = self.store.new_batch()
        self.overlay: dict[bytes, bytes | None] = {}
        self.truncated: set[bytes] = set()
        self.group_rows = 0
        self.group_txns = 0
        self.group_started = 0.0
        self.dirty_counts: set[int] = set()
        self.touched: set[bytes] = set()  # large transaction: undo keys written in this chunk
        self.group_changes: dict[int, int] = {}  # view id -> history entries in the group
        if self.engine is not None:
            if written:
                self.engine.written()
            else:
                self.engine.reset()

    @property
    def group_pending(self) -> bool:
        """True when ended transactions wait in the group for a synced write."""
        return self.group_txns > 0

    def commit_group(self) -> Lsn:
        """Write the group (mirror rows, counts, applied LSN) in one synced write."""
        if self.group_txns == 0 and self.group_rows == 0:
            return self.synced_lsn
        batch = self.batch
        self._put_dirty_counts()
        if self.last_commit is not None:
            meta.put_last_commit(batch, self.store, self.last_commit)
        meta.put_applied(batch, self.store, self.applied_lsn, self.applied_time)
        self.stats["transactions"] += self.group_txns
        self.stats["rows"] += self.group_rows
        self.group_writes += 1
        meta.put_json(batch, self.store, meta.STATS, self.stats)
        if self.engine is not None:
            self.engine.flush()
        if self.large:
            batch.delete_range(*ALL_KEYS, self.undo_cf)
            batch.delete(meta.LARGE_TXN, self.store.cf["meta"])
            self.large = False
        elif self.checkpoint_interval:
            self._put_checkpoints()
        for vid, n in self.group_changes.items():
            if vid in self.since_checkpoint:
                self.since_checkpoint[vid] += n
        self.store.write(batch, sync=True)
        if self.applied_time is not None:
            # Postgres's commit of the group's newest transaction to durable here (/metrics).
            latency = max(0.0, time.time() - self.applied_time / 1e6)
            self.latency = (self.latency[0] + 1, self.latency[1] + latency, latency)
        self.synced_lsn = self.applied_lsn
        self.synced_last_commit = self.last_commit
        self.committed_counts = dict(self.counts)
        self._reset_group(written=True)
        return self.synced_lsn

    def _put_checkpoints(self) -> None:
        """Put into the group's batch a checkpoint of each view that has changed enough since
        its last one: its rows as RocksDB holds them now, as of the last synced group (the
        group being written is not in RocksDB yet, and no large transaction is half written
        when this runs), so one synced write holds all of it or none."""
        for vid, n in self.since_checkpoint.items():
            if n < self.checkpoint_interval or n < self._view_rows(vid):
                continue
            prefix = view_prefix(vid) + b"r"
            cut = len(prefix)
            rows = ((k[cut:], v) for k, v in scan(self.store.views, prefix))
            checkpoint.put(self.batch, self.history_cf, vid, int(self.synced_lsn), rows)
            self.since_checkpoint[vid] = 0
            self.checkpoints_written += 1

    def _view_rows(self, vid: int) -> int:
        """A view's number of rows as of the last synced group."""
        return row_count_of(self.store.views.get(count_key(vid)))

    def _put_dirty_counts(self) -> None:
        for table_id in self.dirty_counts:
            meta.put_row_count(self.batch, self.store, table_id, self.counts[table_id])

    def discard_group(self) -> None:
        """Forget everything not yet synced: the stream will resend it from `synced_lsn`."""
        if self.large:
            self.batch = self.store.new_batch()  # the open chunk: never written
            rollback_large_transaction(self.store)
            self.large = False
        self.applied_lsn = self.synced_lsn
        self.last_commit = self.synced_last_commit
        self.counts = dict(self.committed_counts)
        self.txn_rows = 0
        self._next_check = self.large_txn_rows
        self._reset_group()

    def begin_large(self, commit_lsn: Lsn) -> None:
        """Apply the transaction that begins now in chunks with an undo log (see module doc).
        The group must be empty: what precedes the transaction is synced. `commit_lsn`, the end
        of its commit record, keys the history its chunks write."""
        assert self.group_txns == 0 and self.group_rows == 0
        self.large = True
        self.large_commit_lsn = commit_lsn
        meta.put_json(self.batch, self.store, meta.LARGE_TXN, {"since": str(self.synced_lsn)})
        self._next_check = self.chunk_rows

    def _size_check(self) -> None:
        """Called when txn_rows reaches _next_check: too large for a group, or a chunk is full."""
        if not self.large:
            raise LargeTransaction(self.txn_rows)
        self._write_chunk_of_large()
        self._next_check = self.txn_rows + self.chunk_rows

    def _write_chunk_of_large(self) -> None:
        if self.engine is not None:
            self._end_views(self.large_commit_lsn)  # the views as of this chunk, undo-logged
            self.engine.flush()
        self.store.write(self.batch, sync=False)
        self.batch = self.store.new_batch()
        self.overlay.clear()
        self.truncated.clear()
        self.touched.clear()
        if self.engine is not None:
            self.engine.written()
        if self.on_chunk is not None:
            self.on_chunk("large-chunk")

    def _remember(
        self, key: bytes, before: bytes | object | None = UNCHANGED, tag: bytes = UNDO_MIRROR
    ) -> None:
        """Record the value at `key` (a mirror key, or with `tag` UNDO_VIEWS a views key) as
        it was before the large transaction, once per key."""
        undo_key = tag + key
        if undo_key in self.touched:
            return
        if self._undo_get(undo_key) is None:  # not in an earlier chunk either
            if before is UNCHANGED:
                before = self.get_row(key) if tag == UNDO_MIRROR else self.store.views.get(key)
            self.batch.put(undo_key, encode_undo(before), self.undo_cf)  # type: ignore[arg-type]
        self.touched.add(undo_key)

    def view_write(self, key: bytes, value: bytes | None) -> None:
        """Put (or with None delete) a key of the views column family in the group."""
        if self.large:
            self._remember(key, tag=UNDO_VIEWS)
        if value is None:
            self.batch.delete(key, self.views_cf)
        else:
            self.batch.put(key, value, self.views_cf)

    def record_progress(self, lsn: Lsn) -> None:
        """Persist an idle position (no transaction in flight, nothing pending) and sync it."""
        assert self.group_txns == 0 and self.group_rows == 0
        if lsn <= self.synced_lsn:
            return
        batch = self.store.new_batch()
        meta.put_applied(batch, self.store, lsn, None)
        self.store.write(batch, sync=True)
        self.applied_lsn = self.synced_lsn = lsn

    def begin_transaction(self, commit_time: int, xid: int) -> None:
        """A transaction begins: its view history records its commit time (µs since the Unix
        epoch) and xid."""
        self.commit_time_us = commit_time
        self.xid = xid
        self.history_seq = 0

    def _end_views(self, commit_lsn: Lsn) -> None:
        """Write the view rows the transaction touched, and their changes to the history, keyed
        by the end of its commit record (history.changelog says why that one)."""
        counts = self.group_changes
        for vid, okey, before, after in self.engine.end_transaction():  # type: ignore[union-attr]
            counts[vid] = counts.get(vid, 0) + 1
            pairs = entries(
                vid, commit_lsn, self.history_seq, okey, before, after,
                self.commit_time_us, self.xid,
            )  # fmt: skip
            self.history_seq += 1
            for key, value in pairs:
                if self.large:
                    self._remember(key, None, UNDO_HISTORY)
                self.batch.put(key, value, self.history_cf)

    def end_transaction(self, commit_lsn: Lsn, commit_time: int) -> None:
        """Close a transaction: its changes are in the group, its end LSN is the group's."""
        if self.engine is not None:
            if self.keep_history:
                self._end_views(commit_lsn)
            else:
                self.engine.end_transaction()  # the view rows only (benchmarks' baseline)
        if self.group_txns == 0:
            self.group_started = time.monotonic()  # the group's age: its oldest commit
        self.applied_lsn = commit_lsn
        self.applied_time = commit_time
        self.last_commit = (commit_lsn, self.xid or 0, commit_time)
        self.group_txns += 1
        self.txn_rows = 0
        if not self.large:
            self._next_check = self.large_txn_rows

    # -- row changes -----------------------------------------------------------------------

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
        if self.large:
            self._remember(key)
        self.overlay[key] = data
        self.batch.put(key, data, self.mirror_cf)
        tid = table.info.table_id
        if tid in self.view_tables:
            self.engine.insert(table.info, key, new)  # type: ignore[union-attr, arg-type]
        self.counts[tid] += 1
        self.dirty_counts.add(tid)
        self._row_done()

    def _row_done(self) -> None:
        self.group_rows += 1
        self.txn_rows += 1
        if self.txn_rows >= self._next_check:
            self._size_check()

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
        viewed = table.info.table_id in self.view_tables
        if viewed:
            before_key = old_key if old_key is not None else key
            before = self.get_row(before_key)
            if before is not None:
                self.engine.delete(table.info, before_key, decode_row(before))  # type: ignore[union-attr]
        if self.large:
            self._remember(key)
        if old_key is not None and old_key != key:
            if self.large:
                self._remember(old_key)
            self.overlay[old_key] = None
            self.batch.delete(old_key, self.mirror_cf)
        self.overlay[key] = data
        self.batch.put(key, data, self.mirror_cf)
        if viewed:
            self.engine.insert(table.info, key, new)  # type: ignore[union-attr, arg-type]
        self._row_done()

    def delete(self, table: TableState, old: Sequence[Value]) -> None:
        key = table.key(old)
        tid = table.info.table_id
        if tid in self.view_tables:
            before = self.get_row(key)
            if before is not None:
                self.engine.delete(table.info, key, decode_row(before))  # type: ignore[union-attr]
        if self.large:
            self._remember(key)
        self.overlay[key] = None
        self.batch.delete(key, self.mirror_cf)
        self.counts[tid] -= 1
        self.dirty_counts.add(tid)
        self._row_done()

    def truncate(self, table: TableState) -> None:
        if table.info.table_id in self.view_tables:
            # The views need every row that leaves: delete them one by one.
            for key in self._current_keys(table.prefix):
                data = self.get_row(key)
                if data is not None:
                    self.delete(table, decode_row(data))
            return
        prefix = table.prefix
        if self.large:
            # Every row of the table needs its before-image; the scan must see this
            # transaction's earlier writes, so they go to RocksDB first.
            self._write_chunk_of_large()
            for n, (key, data) in enumerate(scan(self.store.mirror, prefix), 1):
                self._remember(key, data)
                if n % self.chunk_rows == 0:
                    self._write_chunk_of_large()
        end = (table.info.table_id + 1).to_bytes(4, "big")
        self.batch.delete_range(prefix, end, self.mirror_cf)
        for key in [k for k in self.overlay if k.startswith(prefix)]:
            del self.overlay[key]
        self.truncated.add(prefix)
        tid = table.info.table_id
        self.counts[tid] = 0
        self.dirty_counts.add(tid)
        self._row_done()

    def _current_keys(self, prefix: bytes) -> list[bytes]:
        """Mirror keys of one table as of everything fed so far (group included)."""
        keys = [] if prefix in self.truncated else [k for k, _ in scan(self.store.mirror, prefix)]
        seen = set(keys)
        keys += [k for k in self.overlay if k.startswith(prefix) and k not in seen]
        # In key order, whatever part of the group is still in the overlay: the rows leave the
        # views in this order, which numbers their history entries, and a replay after a crash
        # may cut the commit groups elsewhere (promise 4: byte-identical history).
        return sorted(keys)

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
        self._put_dirty_counts()
        self.store.write(self.batch, sync=False)
        self.committed_counts = dict(self.counts)
        self._reset_group()
