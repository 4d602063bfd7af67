"""Snapshot load: the published tables into the mirror, several COPYs at once (issue 14).

The first start copies every published table inside the slot's exported snapshot
(`ingest.snapshot`). `SnapshotLoad` runs `workers` threads, each with its own connection that
imported the snapshot, over the parts `plan_parts` cut (whole tables, ranges of a large one's
pages). A worker moves whole chunks, never single rows, through Python:

    COPY text, chunks of ~8 MB of whole rows        psqlcopy (psql, in C) or pgconn.copy_chunks
    -> columns of text values                       copychunks.parse_chunk (pyarrow CSV)
    -> mirror keys and rows, exactly encode_row's   codecs.rowcolumns (Arrow kernels)
    -> sorted by key, one SST file per chunk        Store.sst_writer, then Store.ingest_mirror

Parsing, encoding and sorting run in pyarrow without the GIL, so one worker's kernels overlap
another's reading. What holds the GIL is, per row, one put into a table file (~0.2 µs on the
2-core box) and making its key and row Python bytes (~0.05 µs), and the reading: ~0.2 µs a row
through psycopg (one libpq call and one append), ~0.04 µs through psql, whose process does
libpq's work in C on the other core. That is why the COPYs go through psql when one is
installed. The GIL-held work bounds the process: more workers than cores mostly keep
Postgres's COPYs and the kernels busy meanwhile. Memory is bounded by workers × a chunk and
what is made of it.

Durability: an ingested file is in the mirror, durably, when `ingest_mirror` returns, but
nothing marks the snapshot complete until the caller's synced write after `run`. A crash
before that leaves it `in_progress`: the next start drops the slot, the mirror and the files
waiting in `snapshot-sst/`, and copies again. Every connection dies with the process, and with
it the imported snapshots.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import threading
from collections.abc import Callable, Sequence

from viewstore.codecs.rowcolumns import encode_rows
from viewstore.errors import StoreError
from viewstore.ingest.copychunks import parse_chunk
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.psqlcopy import PsqlCopy, find_psql
from viewstore.ingest.setup import PublishedTable
from viewstore.ingest.snapshot import (
    APPLICATION_NAME,
    TID_RANGE_SCAN,
    CopyPart,
    SnapshotReader,
    plan_parts,
)
from viewstore.ingest.sourcetext import BadText, SourceText, bad_text
from viewstore.progress import Board, Progress
from viewstore.store import db as meta
from viewstore.store.db import Store
from viewstore.views.schema import TableInfo

log = logging.getLogger("viewstore")

CHUNK_BYTES = 8 << 20  # COPY text per chunk: 8 MB is ~200k narrow rows
BATCH_ROWS = 20_000  # the "snapshot-chunk" crash point follows each BATCH_ROWS puts


def default_workers() -> int:
    """Snapshot workers when none are asked for: one per core, at most 8."""
    return max(1, min(os.cpu_count() or 1, 8))


def _psql_copy(dsn: str) -> PsqlCopy | None:
    """The psql to read COPYs with, when one is installed and works with `dsn`."""
    path = find_psql()
    if path is None:
        return None
    psql = PsqlCopy(path, dsn, application_name=APPLICATION_NAME)
    why_not = psql.probe()
    if why_not is not None:
        log.info("snapshot: reading with psycopg, not psql: %s", why_not)
        return None
    return psql


class SnapshotInterrupted(StoreError):
    def __init__(self) -> None:
        super().__init__("stopped during the initial snapshot; the next start begins it again")


class _Cancelled(Exception):
    """Another worker failed, or a stop was asked for: this one stops at its next chunk."""


class _Table:
    """One table's copy: its encoding, rows so far, progress; shared by its parts' workers."""

    def __init__(
        self,
        table: PublishedTable,
        info: TableInfo,
        parts: int,
        estimate: int,
        board: Board | None,
    ) -> None:
        self.name = table.qualified
        self.table_id = info.table_id
        self.prefix = info.prefix
        self.key_positions = info.key_positions
        self.ncols = len(info.columns)
        self.parts_left = parts
        self.rows = 0
        # On the board from the start, so that `status` counts the tables still waiting too.
        self.progress = Progress(self.name, estimate, board=board)
        self.progress.waiting = True
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            if self.progress.waiting:  # rows/s from when its first part began
                self.progress.begin()

    def part_done(self) -> None:
        with self.lock:
            self.parts_left -= 1
            if self.parts_left == 0:
                self.progress.done()


class SnapshotLoad:
    """Copies the published tables into the mirror; see the module docstring.

    Create it right after the slot (the replication connection must stay idle until `run`
    returns: its exported snapshot lives until its next command), then call `run`.
    """

    def __init__(
        self,
        store: Store,
        dsn: str,
        snapshot_name: str,
        tables: Sequence[PublishedTable],
        infos: Sequence[TableInfo],
        *,
        workers: int,
        stop: threading.Event,
        crash: Callable[[str], None] = lambda _: None,
        chunk_bytes: int = CHUNK_BYTES,
        board: Board | None = None,
        text: SourceText | None = None,
        as_of: Lsn | None = None,
    ) -> None:
        # `text`: a SQL_ASCII database's, read raw and decoded here; `as_of`: the slot's
        # consistent point, which errors name.
        self.text, self.as_of = text, as_of
        raw = text is not None
        self.store = store
        self.stop = stop
        self.crash = crash
        self.chunk_bytes = chunk_bytes
        self.failed = threading.Event()
        self.errors: list[BaseException] = []
        psql = _psql_copy(dsn)
        self.readers: list[SnapshotReader] = [
            SnapshotReader(dsn, snapshot_name, psql, raw_text=raw)
        ]
        try:
            first = self.readers[0]
            pages = {t.qualified: first.pages(t) for t in tables}
            tid_ranges = first.server_version >= TID_RANGE_SCAN
            self.parts = plan_parts(list(tables), pages, workers, tid_ranges=tid_ranges)
            per_table = collections.Counter(p.table.qualified for p in self.parts)
            self.tables = {
                t.qualified: _Table(t, info, per_table[t.qualified], first.estimated_rows(t), board)
                for t, info in zip(tables, infos, strict=True)
            }
            for _ in range(min(workers, len(self.parts)) - 1):
                self.readers.append(SnapshotReader(dsn, snapshot_name, psql, raw_text=raw))
        except BaseException:
            for reader in self.readers:
                reader.abort()
            raise
        self._next = iter(self.parts)
        self._next_lock = threading.Lock()
        self._files = 0
        # Table files wait here to be ingested; left-overs of a crash are removed.
        self.sst_dir = store.path / "snapshot-sst"
        shutil.rmtree(self.sst_dir, ignore_errors=True)
        self.sst_dir.mkdir()
        log.info(
            "snapshot: %d table(s) in %d part(s), %d worker(s), reading with %s",
            len(self.tables),
            len(self.parts),
            len(self.readers),
            psql.psql if psql else "psycopg",
        )

    def run(self) -> dict[int, int]:
        """Copy everything; returns rows per table id. Raises the first worker's error, or
        `SnapshotInterrupted` when `stop` was set."""
        threads = [
            threading.Thread(target=self._work, args=(r,), name=f"snapshot-{i}", daemon=True)
            for i, r in enumerate(self.readers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        shutil.rmtree(self.sst_dir, ignore_errors=True)
        if self.errors:
            raise self.errors[0]
        if self.stop.is_set():
            raise SnapshotInterrupted()
        return {t.table_id: t.rows for t in self.tables.values()}

    def _work(self, reader: SnapshotReader) -> None:
        try:
            while True:
                with self._next_lock:
                    part = next(self._next, None)
                if part is None:
                    break
                self._copy(reader, part)
            reader.close()
        except BaseException as exc:
            reader.abort()
            if not isinstance(exc, _Cancelled):
                self.errors.append(exc)
            self.failed.set()

    def _check(self) -> None:
        if self.failed.is_set() or self.stop.is_set():
            raise _Cancelled()

    def _copy(self, reader: SnapshotReader, part: CopyPart) -> None:
        import pyarrow.compute as pc

        table = self.tables[part.table.qualified]
        table.start()
        for raw in reader.chunks(part, self.chunk_bytes):
            self._check()
            chunk = raw if self.text is None else self._decode(part, raw)
            del raw
            columns = parse_chunk(chunk, table.ncols)
            del chunk
            keys = encode_rows([columns[i] for i in table.key_positions], table.prefix)
            rows = encode_rows(columns)
            del columns
            if len(keys) > 1 and not pc.all(pc.less(keys[:-1], keys[1:])).as_py():
                order = pc.sort_indices(keys)  # a table file's keys ascend
                keys, rows = keys.take(order), rows.take(order)
            # numpy object arrays of bytes: made in C++, cheaper than to_pylist's scalars
            self._write(
                table, keys.to_numpy(zero_copy_only=False), rows.to_numpy(zero_copy_only=False)
            )
        table.part_done()

    def _decode(self, part: CopyPart, raw: bytearray) -> bytes | bytearray:
        assert self.text is not None
        try:
            return self.text.chunk(raw)
        except BadText as exc:
            column = part.table.columns[exc.column][0]
            where = f"in the snapshot as of {self.as_of}"
            raise bad_text(part.table.qualified, column, where, exc) from None

    def _write(self, table: _Table, keys: Sequence[bytes], rows: Sequence[bytes]) -> None:
        if not len(keys):
            return
        store = self.store
        with self._next_lock:
            self._files += 1
            path = str(self.sst_dir / f"{self._files}.sst")
        with store.writing():  # the table files are on the store's disk too
            writer = store.sst_writer()
            writer.open(path)
            put = writer.__setitem__
            for start in range(0, len(keys), BATCH_ROWS):
                end = start + BATCH_ROWS
                # map + deque: the puts without a Python-level loop body (~0.1 µs a row less)
                collections.deque(map(put, keys[start:end], rows[start:end]), maxlen=0)
                self.crash("snapshot-chunk")
                self._check()
            writer.finish()
        store.ingest_mirror([path])
        with table.lock:  # counts go to the store in the order they grow
            table.rows += len(keys)
            batch = store.new_batch()
            meta.put_row_count(batch, store, table.table_id, table.rows)
            store.write(batch, sync=False)
            table.progress.add(len(keys))
