"""Store: the RocksDB database behind a data directory, and what its metadata means.

One RocksDB database per data directory, in raw mode (bytes in, bytes out), with one column
family per concern:

    meta     applied LSN, snapshot state, source identity, table schemas, row counts, progress
    mirror   table id (4 bytes) + encoded primary key  ->  encoded row (codecs.row)
    views    view state: join indexes, groups, output rows, sort indexes (store.engine)
    history  every change of every view, keyed by view and commit LSN (history.changelog)
    undo     before-images of the rows a large transaction has written so far (see apply.py)

Everything that describes "how far the store has got" lives in `meta` and is written in the same
WriteBatch as the data it describes, so a reader (or a restart) never sees data without its LSN
or an LSN without its data. `Store` is the only owner of the RocksDB handle; a second writer on
the same directory is refused by RocksDB's lock, readers in other processes open it read-only.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    IngestExternalFileOptions,
    Options,
    Rdict,
    ReadOptions,
    Snapshot,
    SstFileWriter,
    WriteBatch,
    WriteOptions,
)

from viewstore.codecs.key import prefix_end
from viewstore.errors import StoreError
from viewstore.ingest.lsn import ZERO, Lsn
from viewstore.progress import RunProgress
from viewstore.views.schema import TableInfo

COLUMN_FAMILIES = ("meta", "mirror", "views", "history", "undo")

# meta keys
APPLIED_LSN = b"applied_lsn"  # 8 bytes: end LSN of the last applied commit (or idle progress)
APPLIED_TIME = b"applied_time"  # 8 bytes: commit time of that transaction, unix µs
# 8 + 4 + 8 bytes: commit LSN, xid and commit time (unix µs) of the last transaction applied
# (store.sourcecheck.ResumeCheck)
LAST_COMMIT = b"last_commit"
SNAPSHOT = b"snapshot"  # JSON SnapshotState
SOURCE = b"source"  # JSON SourceInfo
STATS = b"stats"  # JSON counters
LARGE_TXN = b"large_txn"  # JSON: a large transaction is partly written (before-images in undo)
TABLE_PREFIX = b"table/"  # + qualified name -> JSON TableInfo
ROWCOUNT_PREFIX = b"rowcount/"  # + 4-byte table id -> 8-byte count

_I64 = struct.Struct(">q")
_LAST_COMMIT = struct.Struct(">QIq")

ALL_KEYS = (b"", b"\xff" * 9)  # delete_range bounds covering every key of a column family
UNDO_MIRROR = b"m"  # undo keys: a tag for the column family (the mirror), then its key
UNDO_VIEWS = b"v"  # ... or the views column family
UNDO_HISTORY = b"h"  # ... or the history column family
VIEW_PREFIX = b"view/"  # + view name -> JSON ViewInfo (store.viewcatalog)
JOIN_INDEX_PREFIX = b"joinindex/"  # + table id (4) + column (2) -> b"ready"
PROGRESS = b"progress"  # JSON viewstore.progress.RunProgress: what the running `run` is doing


class SnapshotState(BaseModel):
    """Where the initial snapshot stands. `in_progress` survives a crash and means: redo it."""

    state: Literal["in_progress", "complete"]
    slot: str
    consistent_point: str | None = None  # Lsn text, once known


class SourceInfo(BaseModel):
    """Which Postgres the store follows; a different system id means a different history."""

    system_id: str
    timeline: int
    database: str
    publication: str
    slot: str
    # A SQL_ASCII database's text was read in this encoding (ingest.sourcetext); None for others.
    text_encoding: str | None = None


# Readers in other processes (`status`, the Python API) open the store read-only, which replays
# every write-ahead log file not yet flushed into tables: with RocksDB's defaults that is up to
# ~64 MB per column family and ~300 ms per open. Small memtables and a cap on the total log size
# keep that replay to a few MB (a few tens of ms) at the price of more, smaller flushes.
_WRITE_BUFFER = 8 << 20
_MAX_TOTAL_WAL = 16 << 20


# The view engine reads single keys at random (a player's row, its group, its output row):
# bloom filters let a get skip the files that cannot hold the key, and one block cache shared by
# the column families keeps hot blocks decoded (the default is 8 MB per column family).
_BLOCK_CACHE_BYTES = 256 << 20
_SCAN_READAHEAD = 2 << 20  # long scans (the DuckDB copy reading the log) read ahead this much
_BLOOM_BITS_PER_KEY = 10
_block_cache: Cache | None = None


def _table_options() -> BlockBasedOptions:
    global _block_cache
    if _block_cache is None:
        _block_cache = Cache(_BLOCK_CACHE_BYTES)  # allocated as it fills, not up front
    table = BlockBasedOptions()
    table.set_bloom_filter(_BLOOM_BITS_PER_KEY, False)
    table.set_block_cache(_block_cache)
    return table


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_max_total_wal_size(_MAX_TOTAL_WAL)
    opts.set_write_buffer_size(_WRITE_BUFFER)
    opts.set_block_based_table_factory(_table_options())
    return opts


def _cf_options() -> Options:
    opts = Options(raw_mode=True)
    opts.set_write_buffer_size(_WRITE_BUFFER)
    opts.set_block_based_table_factory(_table_options())
    return opts


log = logging.getLogger("viewstore")

_LOW_SPACE = 64 << 20


def _disk_note(path: Path) -> str:
    """' (the disk is full: N bytes free)' when it nearly is: RocksDB's message after the first
    failed write ('Writer has previous error') no longer says why."""
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    return f" (the disk is full: {free:,} bytes free)" if free < _LOW_SPACE else ""


class Store:
    """The RocksDB store of one data directory. Open with `Store.open`."""

    def __init__(self, db: Rdict, path: Path, readonly: bool) -> None:
        self.db = db
        self.path = path
        self.readonly = readonly
        self.cf = {name: db.get_column_family_handle(name) for name in COLUMN_FAMILIES}
        self.meta = db.get_column_family("meta")
        self.mirror = db.get_column_family("mirror")
        self.undo = db.get_column_family("undo")
        self.views = db.get_column_family("views")
        self.history = db.get_column_family("history")
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()
        self._ingest = IngestExternalFileOptions()
        self._ingest.set_move_files(True)
        # Held while a batch is written, so that `snapshot` sees all of a batch or none of it.
        self._write_lock = threading.Lock()
        self._owner = True  # False for a snapshot: it shares the database, closing is not its job

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> Store:
        """Open (creating if needed, unless read-only) the store in `path`."""
        path = Path(path)
        if readonly and not (path / "CURRENT").exists():
            raise StoreError(
                f"no viewstore data in {path}",
                hint="check --data, or start `viewstore run --data DIR` to create it",
            )
        path.mkdir(parents=True, exist_ok=True)
        cfs = {name: _cf_options() for name in COLUMN_FAMILIES}
        try:
            if readonly:
                db = _open_read_only(path, cfs)
            else:
                db = Rdict(str(path), _options(), column_families=cfs)
        except Exception as exc:
            if "lock" in str(exc).lower():
                raise StoreError(
                    f"the store in {path} is open in another process",
                    hint="is `viewstore run` already running on this data dir? Stop it first",
                ) from None
            raise StoreError(f"cannot open the store in {path}: {exc}") from None
        return cls(db, path, readonly)

    def snapshot(self) -> Store:
        """A consistent read-only view of this store as it is now, for readers in the process
        that writes it (the HTTP server of `run --http`): every column family at the same
        point, between two batches, however long the reads take."""
        with self._write_lock:
            snaps = {
                name: _SnapshotFamily(getattr(self, name).snapshot()) for name in COLUMN_FAMILIES
            }
        view = object.__new__(Store)
        view.db, view.path, view.readonly, view.cf = self.db, self.path, True, self.cf
        for name, snap in snaps.items():
            setattr(view, name, snap)
        view._owner = False
        return view

    def close(self) -> None:
        """Close the database. rocksdict keeps RocksDB (and its lock) open while any column
        family view or handle is alive, so those go first."""
        if not self._owner:
            return
        try:
            self.meta.close()
            self.mirror.close()
            self.undo.close()
            self.views.close()
            self.history.close()
            self.cf.clear()
            self.db.close()
        except Exception as exc:
            # Closing flushes memtables: on a full or failing disk that fails too, after the
            # error that stopped the writer. What was synced is on disk either way.
            if not str(exc).startswith("IO error"):
                raise
            log.warning("closing the store in %s: %s (what was synced is safe)", self.path, exc)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def new_batch(self) -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        """Apply a WriteBatch atomically; with sync, it is on disk when this returns."""
        with self._write_lock, self.writing():
            self.db.write(batch, self._sync if sync else self._nosync)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Turn RocksDB's I/O errors (a full disk, a failing one) into a StoreError that says
        what to do. Nothing of a failed write is acknowledged: the caller stops, and the next
        start resumes after the last synced write."""
        try:
            yield
        except Exception as exc:
            text = str(exc)
            if not (text.startswith("IO error") or "No space left" in text):
                raise
            full = _disk_note(self.path)
            if full or "No space left" in text:
                fix = f"free space on the disk that holds {self.path}"
            else:
                fix = f"check the disk that holds {self.path} (the kernel's log: dmesg)"
            raise StoreError(
                f"cannot write the store in {self.path}: {text}{full}",
                hint=f"{fix}, then start viewstore again: it resumes after the last "
                "transaction it synced",
            ) from None

    def ingest_mirror(self, paths: list[str]) -> None:
        """Move SST files (written with `sst_writer`, keys ascending) into the mirror: atomic
        and durable when this returns, like a synced write. The initial snapshot writes its
        chunks so (issue 14): a put into a file costs a third of a put into a memtable."""
        with self.writing():
            self.mirror.ingest_external_file(paths, self._ingest)

    def sst_writer(self) -> SstFileWriter:
        """A writer of table files the mirror can ingest: the mirror's own table options."""
        return SstFileWriter(_cf_options())

    # -- metadata --------------------------------------------------------------------------

    def applied_lsn(self) -> Lsn:
        raw = self.meta.get(APPLIED_LSN)
        return ZERO if raw is None else Lsn.from_bytes8(raw)

    def applied_time(self) -> int | None:
        raw = self.meta.get(APPLIED_TIME)
        return None if raw is None else _I64.unpack(raw)[0]

    def last_commit(self) -> tuple[Lsn, int, int] | None:
        """Commit LSN, xid and commit time (unix µs) of the last transaction applied since the
        snapshot (None: none yet)."""
        raw = self.meta.get(LAST_COMMIT)
        if raw is None:
            return None
        lsn, xid, commit_time = _LAST_COMMIT.unpack(raw)
        return Lsn(lsn), xid, commit_time

    def snapshot_state(self) -> SnapshotState | None:
        raw = self.meta.get(SNAPSHOT)
        return None if raw is None else SnapshotState.model_validate_json(raw)

    def source(self) -> SourceInfo | None:
        raw = self.meta.get(SOURCE)
        return None if raw is None else SourceInfo.model_validate_json(raw)

    def progress(self) -> RunProgress | None:
        """What the last `run` on this store recorded doing (unsynced: a reader sees it within
        a write, a crash may lose the last one); None before any run recorded it."""
        raw = self.meta.get(PROGRESS)
        return None if raw is None else RunProgress.model_validate_json(raw)

    def stats(self) -> dict[str, int]:
        raw = self.meta.get(STATS)
        return {} if raw is None else json.loads(raw)

    def tables(self) -> dict[str, TableInfo]:
        """Mirrored tables by qualified name (`schema.table`)."""
        out = {}
        for _, raw in self.meta.items(from_key=TABLE_PREFIX):
            if not _.startswith(TABLE_PREFIX):
                break
            info = TableInfo.model_validate_json(raw)
            out[info.qualified] = info
        return out

    def row_count(self, table: TableInfo) -> int:
        raw = self.meta.get(ROWCOUNT_PREFIX + table.prefix)
        return 0 if raw is None else _I64.unpack(raw)[0]

    @property
    def large_txn_pending(self) -> bool:
        """A large transaction is partly written (its before-images are in the undo log)."""
        return self.meta.get(LARGE_TXN) is not None

    def pending_history(self, key: bytes) -> bool:
        """Whether the history entry `key` was written by a large transaction still being
        written (its entries are in the log but not history yet)."""
        return self.large_txn_pending and self.undo.get(UNDO_HISTORY + key) is not None

    def history_range(
        self, low: bytes, high: bytes, limit: int | None = None, *, values: bool = False
    ) -> list[bytes]:
        """The keys (or, with `values`, the values) of the history column family from `low`
        (inclusive) to `high` (exclusive), in key order, at most `limit`: one call per chunk,
        so that the DuckDB copy reads its log without a Python step per entry (issue 15).
        Nothing here hides a large transaction's entries: read only up to the applied LSN."""
        bound = ReadOptions()
        bound.set_iterate_upper_bound(high)
        bound.set_readahead_size(_SCAN_READAHEAD)
        scan = self.history.values if values else self.history.keys
        return list(islice(scan(from_key=low, read_opt=bound), limit))

    def history_entries_at_least(self, low: bytes, high: bytes) -> int:
        """A lower bound of the history entries in [low, high), from the table files' metadata
        alone: the entries of the files whose keys all fall in the range (those of files that
        straddle its ends, and of the memtables, are not counted). Tells a large range from a
        small one without reading it (the DuckDB copy's choice of a reading process)."""
        return sum(
            f["num_entries"] - f["num_deletions"]
            for f in self.db.live_files()
            if low <= f["start_key"] and f["end_key"] < high
        )

    def rows(self, table: TableInfo) -> Iterator[tuple[bytes, bytes]]:
        """(mirror key, encoded row) of every row of `table`, in key-byte order, as of the
        last committed transaction: the rows of a large transaction still being written are
        replaced by their before-images from the undo log."""
        return self.committed(self.mirror, UNDO_MIRROR, table.prefix)

    def committed(
        self, cf: Rdict, tag: bytes, prefix: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) under `prefix` in column family `cf` (undo tag `tag`) as of the last
        committed transaction, in key order (or reversed): while a large transaction is being
        written, the keys it touched read as their before-images from the undo log."""
        data = scan(cf, prefix, reverse=reverse)
        if self.meta.get(LARGE_TXN) is None:
            return data
        return self._merged(data, tag, prefix, reverse)

    def _merged(
        self, data: Iterator[tuple[bytes, bytes]], tag: bytes, prefix: bytes, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        # Both sides are sorted by key: merge them, the undo side winning.
        undo = ((k[1:], v) for k, v in scan(self.undo, tag + prefix, reverse=reverse))
        first = (lambda a, b: a > b) if reverse else (lambda a, b: a < b)
        m, u = next(data, None), next(undo, None)
        while m is not None or u is not None:
            if u is None or (m is not None and first(m[0], u[0])):
                yield m  # type: ignore[misc]
                m = next(data, None)
                continue
            if m is not None and m[0] == u[0]:
                m = next(data, None)
            before = decode_undo(u[1])
            if before is not None:
                yield u[0], before
            u = next(undo, None)


class _SnapshotFamily:
    """A column family's snapshot with the read methods the store's readers use."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        try:
            return self._snapshot[key]
        except Exception:  # rocksdict raises a bare Exception("key not found")
            return default

    def items(self, from_key: bytes | None = None, backwards: bool = False) -> Any:
        return self._snapshot.items(from_key=from_key, backwards=backwards)

    def iter(self) -> Any:
        return self._snapshot.iter()

    def keys(self, from_key: bytes | None = None, read_opt: ReadOptions | None = None) -> Any:
        return self._snapshot.keys(from_key=from_key, read_opt=read_opt)

    def values(self, from_key: bytes | None = None, read_opt: ReadOptions | None = None) -> Any:
        return self._snapshot.values(from_key=from_key, read_opt=read_opt)


def _open_read_only(path: Path, cfs: dict[str, Options]) -> Rdict:
    # A read-only open reads the MANIFEST, then opens the table files it lists; a compaction in
    # the writing process can delete one in between ("No such file or directory"). The next
    # attempt reads the new MANIFEST. Once open, the files are held open and stay readable.
    for attempt in range(_READ_ONLY_ATTEMPTS):
        try:
            return Rdict(
                str(path), _options(), column_families=cfs, access_type=AccessType.read_only()
            )
        except Exception as exc:
            if "No such file" not in str(exc) or attempt == _READ_ONLY_ATTEMPTS - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


_READ_ONLY_ATTEMPTS = 10


def scan(cf: Rdict, prefix: bytes, *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a column family whose key starts with `prefix`, in key order
    (or reversed)."""
    if not reverse and prefix.rstrip(b"\xff") and isinstance(cf, Rdict):
        # RocksDB stops at the bound itself: no Python test per key (4x faster on big scans).
        # (A snapshot's reads, `_SnapshotFamily`, take the general path below.)
        bound = ReadOptions()
        bound.set_iterate_upper_bound(prefix_end(prefix))
        yield from cf.items(from_key=prefix, read_opt=bound)
        return
    if reverse:
        # A prefix of only 0xff bytes has no key after all of its keys: start from the last.
        end = prefix_end(prefix) if prefix.rstrip(b"\xff") else None
        items = cf.items(from_key=end, backwards=True)
    else:
        items = cf.items(from_key=prefix)
    for key, value in items:
        if not key.startswith(prefix):
            if reverse and key >= prefix:
                continue  # the key at prefix_end itself
            break
        yield key, value


def encode_undo(before: bytes | None) -> bytes:
    """An undo entry: the row before the large transaction touched it, or its absence."""
    return b"\x00" if before is None else b"\x01" + before


def decode_undo(entry: bytes) -> bytes | None:
    return None if entry[:1] == b"\x00" else entry[1:]


# Helpers that put metadata into a batch: writers never put meta outside a batch.


def put_applied(batch: WriteBatch, store: Store, lsn: Lsn, commit_time: int | None) -> None:
    batch.put(APPLIED_LSN, lsn.to_bytes8(), store.cf["meta"])
    if commit_time is not None:
        batch.put(APPLIED_TIME, _I64.pack(commit_time), store.cf["meta"])


def put_last_commit(batch: WriteBatch, store: Store, commit: tuple[Lsn, int, int]) -> None:
    lsn, xid, commit_time = commit
    batch.put(LAST_COMMIT, _LAST_COMMIT.pack(int(lsn), xid, commit_time), store.cf["meta"])


def put_row_count(batch: WriteBatch, store: Store, table_id: int, count: int) -> None:
    batch.put(ROWCOUNT_PREFIX + table_id.to_bytes(4, "big"), _I64.pack(count), store.cf["meta"])


def put_json(batch: WriteBatch, store: Store, key: bytes, model: BaseModel | dict) -> None:
    data = model.model_dump_json() if isinstance(model, BaseModel) else json.dumps(model)
    batch.put(key, data.encode(), store.cf["meta"])


def put_table(batch: WriteBatch, store: Store, table: TableInfo) -> None:
    put_json(batch, store, TABLE_PREFIX + table.qualified.encode(), table)
