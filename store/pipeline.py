"""Pipeline: Postgres → decode → apply → RocksDB, and the only path of feedback back.

    start:   preflight → publication → store → snapshot (first start) or slot check (resume)
    views:   compile views.sql; drop stale view state, backfill new views from the mirror
    stream:  CopyData → walproto → pgoutput → Applier (mirror + views, one WriteBatch per
             commit group)
    ack:     standby status with flush = the applied LSN of the last *synced* group

Durability story, in order of what can go wrong:

- kill -9 anywhere: RocksDB holds whole groups only (mirror rows + applied LSN in one synced
  WriteBatch). On restart the slot resends from its confirmed_flush_lsn, which never passes the
  synced LSN; transactions whose commit LSN is below the applied LSN are skipped.
- Connection lost or Postgres restarted: the unsynced group is discarded and streaming resumes
  from the synced LSN after a backoff.
- The slot is ahead of the store (advanced, dropped and recreated, invalidated): stop with an
  error. Changes between the two are gone and only a new snapshot (`resnapshot`) repairs that.
- Crash during the initial snapshot: the snapshot state stays `in_progress`; the next start
  drops the slot it created, clears the mirror and snapshots again.
- Idle publication: when nothing is in flight and all is synced, the keepalive's WAL position is
  persisted and acknowledged, so writes to unpublished tables do not pin WAL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from viewstore.dsn import redact
from viewstore.errors import ConfigError, SlotError, SourceError, UnsupportedError, ViewstoreError
from viewstore.history.retention import Retention, apply_retention
from viewstore.ingest import setup
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.pgconn import ReplicationConnection, connect, server_encoding
from viewstore.ingest.pgoutput import (
    Begin,
    Commit,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
    decode,
)
from viewstore.ingest.sourcetext import BadText, SourceText, bad_text, normalise
from viewstore.ingest.transactions import XLOGDATA_HEADER, Assembler
from viewstore.ingest.walproto import PG_EPOCH_US
from viewstore.progress import Board, RunProgress
from viewstore.store import db as meta
from viewstore.store.apply import (
    Applier,
    LargeTransaction,
    TableState,
    rollback_large_transaction,
)
from viewstore.store.db import SnapshotState, SourceInfo, Store
from viewstore.store.snapshotload import SnapshotLoad, default_workers
from viewstore.store.sourcecheck import (
    RESNAPSHOT,
    ResumeCheck,
    check_history,
    check_relation,
    check_tables,
)
from viewstore.store.viewcatalog import (
    CATALOG,
    prepare_views,
    read_views_file,
    stored_views,
    views_from_store,
)
from viewstore.views.schema import ColumnInfo, TableInfo

log = logging.getLogger("viewstore")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0  # seconds between attempts to reach Postgres again


class RunConfig(BaseModel):
    """What `viewstore run` needs; names default to ones derived from the data directory."""

    dsn: str
    data_dir: Path
    publication: str | None = None
    slot: str | None = None
    tables: list[str] = Field(default_factory=list)
    views_file: Path | None = None  # CREATE MATERIALIZED VIEW statements to keep current
    resnapshot: bool = False
    # A SQL_ASCII database's text is read in this encoding (ingest.sourcetext); None: what the
    # store read it in before, UTF8 at first.
    source_encoding: str | None = None
    # Connections that copy the snapshot at once (None: one per core, store.snapshotload).
    snapshot_workers: int | None = None
    commit_interval: float = 0.05  # seconds a group may stay open under load
    # ... and while catching up (the last transaction applied committed more than
    # `catchup_lag` seconds ago): larger groups write each group state and output row once for
    # more transactions (1000-row transactions: 28.7 us/row in groups of 1, 18.5 in groups of
    # 20), and a reader who is seconds behind loses nothing by waiting a little longer.
    catchup_commit_interval: float = 0.5
    catchup_lag: float = 1.0
    group_max_rows: int = 100_000
    large_txn_rows: int = 250_000  # beyond this a transaction is applied in chunks (apply.py)
    chunk_rows: int = 50_000
    status_interval: float = 1.0  # standby status at least this often (wal_sender_timeout/2 > this)
    slot_busy_wait: float = 10.0  # after a kill -9 the old walsender lingers a moment
    # A network path can die without a reset (packets dropped, a NAT entry gone): nothing
    # arrives and nothing fails. After `stream_silence` seconds without a message viewstore
    # pings the server (a status update asking for a reply); unanswered for as long again,
    # the connection is taken for dead and replaced.
    stream_silence: float = 10.0
    # A new slot waits for every transaction that holds a transaction id to end; one left
    # open would block the first start forever. Wait this long, naming them in the log.
    slot_create_wait: float = 300.0
    slot_wait_report: float = 5.0  # the first such log line after this many seconds
    # Keep the history from this far back on (a duration, 7d, or an LSN age, 10GB; None: all
    # of it), compacting at most every `history_retention_interval` seconds (history.retention).
    history_retention: str | None = None
    history_retention_interval: float = 60.0
    # A view's next history checkpoint (history.checkpoint) is due after max(this, its rows)
    # changes; 0: none (as-of reads of a whole view then grow with the history).
    history_checkpoint_interval: int = 10_000
    # Benchmarks only: keep the views without their history, to measure what it costs. As-of
    # reads and `verify` then have nothing to read.
    history: bool = True
    progress_interval: float = (
        1.0  # idle progress (keepalive position) persisted at most this often
    )
    # The catalog is compared with what the store mirrors this often while streaming
    # (store.sourcecheck): a table dropped and recreated, or that left the publication, sends
    # nothing on the stream that would tell.
    catalog_check_interval: float = 2.0

    def default_name(self) -> str:
        path = str(self.data_dir.resolve())
        stem = re.sub(r"[^a-z0-9_]", "_", self.data_dir.resolve().name.lower())[:40]
        return f"viewstore_{stem}_{hashlib.sha1(path.encode()).hexdigest()[:8]}"

    @property
    def slot_name(self) -> str:
        return self.slot or self.default_name()

    @property
    def publication_name(self) -> str:
        return self.publication or self.default_name()


# Test hook: crash points by name, so tests can kill the process at exact moments.
CrashHook = Callable[[str], None]


def _no_crash(_: str) -> None:
    pass


class Pipeline:
    """Runs ingest for one data directory until `stop` is set. See the module docstring."""

    def __init__(self, config: RunConfig, crash_hook: CrashHook = _no_crash) -> None:
        self.config = config
        self.crash = crash_hook
        self.stop = threading.Event()
        self.store: Store | None = None
        self.applier: Applier | None = None
        self.retention: Retention | None = None
        self.received_lsn: Lsn | None = None  # the server's position, as last acknowledged
        self.opened = threading.Event()  # the store is open: `run --http` can serve it
        self.closing = threading.Event()  # ... and is about to close (stopped, or failed)
        self.streaming = threading.Event()  # every start check passed, the stream has begun
        # Transactions to apply in chunks: the start of their commit record (Begin's final LSN)
        # -> its end (the Commit's end LSN), learned on a first pass.
        self.large_txns: dict[Lsn, Lsn] = {}
        self.text: SourceText | None = None  # a SQL_ASCII database's text, decoded here
        self.slot_confirmed: Lsn | None = None  # the slot's position when streaming started
        self.assembler: Assembler | None = None  # the current stream's transaction state
        self.reconnects = 0  # connections lost and reopened (tests and status read it)
        # The walsender of a connection found dead: it may hold the slot until its
        # wal_sender_timeout, so the next start ends it (it is ours: the server's pid of it).
        self.dead_walsender: int | None = None
        self.connected = False  # reached Postgres at least once
        # Snapshot and view build progress: logged, written into the store for `status` and
        # `query` (other processes), drawn by the CLI's terminal bar (issue 14).
        self.board = Board()
        self.board.listen(self._publish_progress)

    # -- entry point -----------------------------------------------------------------------

    def run(self) -> Lsn:
        """Set up, snapshot or resume, stream until stopped; returns the final synced LSN."""
        cfg = self.config
        log.info(
            "source %s, publication %s, slot %s",
            redact(cfg.dsn),
            cfg.publication_name,
            cfg.slot_name,
        )
        # A views file with an error fails now, before anything touches Postgres or the store.
        view_defs = read_views_file(cfg.views_file) if cfg.views_file is not None else None
        self.retention = (
            Retention.parse(cfg.history_retention) if cfg.history_retention is not None else None
        )
        if view_defs is not None and not cfg.tables:
            names = {v.name for v in view_defs}  # a view may read views of the file
            cfg.tables = sorted({t for v in view_defs for t in v.base_tables} - names)
        self.store = store = Store.open(cfg.data_dir)
        self.opened.set()
        board_token = self.board.activate()  # the view builds' Progress join it
        try:
            # The views to name as "being built" while the snapshot runs.
            stored = sorted(stored_views(store))
            self.board.views = stored if view_defs is None else [v.name for v in view_defs]
            restored = rollback_large_transaction(store)
            if restored:
                log.warning(
                    "rolled back a large transaction interrupted by a crash (%d rows)", restored
                )
            backoff = BACKOFF_FIRST
            while True:
                try:
                    repl, database = self._prepare(store)
                    break
                except SourceError as exc:
                    # Never reached Postgres: fail fast, a wrong DSN should say so at once.
                    # Reached it and lost it (a restart mid-snapshot, say): retry.
                    if not self.connected or not exc.transient or self.stop.is_set():
                        raise
                    log.warning("%s; retrying in %.1fs", exc, backoff)
                    backoff = self._back_off(backoff)
            if view_defs is None:
                view_defs = views_from_store(store)  # a restart without --views keeps them
            self.board.set_phase("views", [v.name for v in view_defs])
            views = prepare_views(store, view_defs)
            self.board.set_phase("streaming")
            self.applier = Applier(
                store,
                large_txn_rows=cfg.large_txn_rows,
                chunk_rows=cfg.chunk_rows,
                on_chunk=self.crash,
                views=views,
                history=cfg.history,
                checkpoint_interval=cfg.history_checkpoint_interval,
            )
            return self._stream_with_reconnect(repl, database)
        finally:
            Board.deactivate(board_token)
            self.closing.set()  # readers in this process (run --http) stop reading first
            if self.applier is not None:
                self.applier.close()  # its column family handles would keep RocksDB open
            store.close()

    def _prepare(self, store: Store) -> tuple[ReplicationConnection | None, str]:
        """Preflight, then the snapshot (first start) or the resume checks.

        Returns the replication connection to stream on (the one that created the slot, after
        a snapshot) or None (resume: streaming connects by itself), and the database name.
        """
        cfg = self.config
        conn = connect(cfg.dsn)
        self.connected = True
        repl = None
        try:
            setup.check_server(conn)
            state = store.snapshot_state()
            resume = state is not None and state.state == "complete" and not cfg.resnapshot
            self.text = self._source_text(conn, store, resume)
            if setup.ensure_publication(conn, cfg.publication_name, cfg.tables, resume=resume):
                log.info("created publication %s", cfg.publication_name)
            tables = setup.published_tables(conn, cfg.publication_name)
            if not tables:
                raise setup.PreflightError(
                    f"publication {cfg.publication_name!r} publishes no tables",
                    hint=f"ALTER PUBLICATION {cfg.publication_name} ADD TABLE ...;",
                )
            repl = ReplicationConnection(cfg.dsn)
            system_id, timeline, server_lsn, database = repl.identify_system()
            state = store.snapshot_state()
            if cfg.resnapshot or state is None or state.state == "in_progress":
                self._snapshot(conn, repl, tables, state, system_id, timeline, database)
                cfg.resnapshot = False  # done: a retry after this point must not redo it
                return repl, database
            self._check_history(store, repl, system_id, timeline, server_lsn)
            repl.close()
            check_tables(conn, cfg.publication_name, store.tables(), tables)
            return None, database
        except BaseException:
            if repl is not None:
                repl.close()
            raise
        finally:
            conn.close()

    def _source_text(self, conn: object, store: Store, resume: bool) -> SourceText | None:
        """How to read a SQL_ASCII database's text (None for any other encoding: Postgres
        converts it to UTF8). The store keeps the encoding it read the text in: a resumed store
        goes on in it, and reading on in another would mix two readings of the same bytes."""
        cfg = self.config
        encoding = server_encoding(conn)  # type: ignore[arg-type]
        if encoding != "SQL_ASCII":
            if cfg.source_encoding is not None:
                raise ConfigError(
                    f"--source-encoding is for SQL_ASCII databases; this one's encoding is "
                    f"{encoding}, which Postgres converts to UTF8 itself",
                    hint="run without --source-encoding",
                )
            return None
        source = store.source()
        stored = (source.text_encoding if source is not None else None) or "UTF8"
        wanted = normalise(cfg.source_encoding) if cfg.source_encoding is not None else None
        if resume and wanted is not None and wanted != stored:
            raise ConfigError(
                f"the store read this SQL_ASCII database's text as {stored}; reading on as "
                f"{wanted} would mix two readings of the same bytes",
                hint=f"viewstore run --resnapshot --source-encoding {wanted} ...",
            )
        text = SourceText(wanted or stored)
        log.info("database encoding SQL_ASCII: its text is read as %s", text.encoding)
        return text

    def _transcoder(self, asm: Assembler) -> Callable[[TableState, tuple], tuple]:  # type: ignore[type-arg]
        """A row's values in UTF-8, for a SQL_ASCII database (see `_source_text`)."""
        text = self.text
        assert text is not None
        values = text.values

        def decode_row(state: TableState, row: tuple) -> tuple:  # type: ignore[type-arg]
            try:
                return values(row)
            except BadText as exc:
                info = state.info
                where = (
                    f"in the transaction with xid {asm.xid}, whose commit record starts at "
                    f"{asm.final_lsn}"
                )
                raise bad_text(info.qualified, info.columns[exc.column].name, where, exc) from None

        return decode_row

    # -- snapshot --------------------------------------------------------------------------

    def _snapshot(
        self,
        conn: object,
        repl: ReplicationConnection,
        tables: list[setup.PublishedTable],
        state: SnapshotState | None,
        system_id: str,
        timeline: int,
        database: str,
    ) -> Lsn:
        cfg, store = self.config, self.store
        assert store is not None
        slot = cfg.slot_name
        existing = setup.slot_info(conn, slot)
        if existing is not None:
            ours = state is not None and state.state == "in_progress" and state.slot == slot
            if not (ours or cfg.resnapshot):
                raise SlotError(
                    f"slot {slot!r} already exists, but the store in {cfg.data_dir} has no "
                    "snapshot taken from it; a snapshot needs a slot created by viewstore",
                    hint="use another --slot, drop this one with SELECT "
                    f"pg_drop_replication_slot('{slot}'), or pass --resnapshot to replace it",
                )
            why = "left by an unfinished snapshot" if ours else "to replace it (--resnapshot)"
            log.info("dropping slot %s %s", slot, why)
            setup.drop_slot(conn, slot)

        # Mark the snapshot as started *before* creating the slot: a crash from here on makes
        # the next start drop the slot and begin again, never resume from half a mirror.
        batch = store.new_batch()
        batch.delete_range(*meta.ALL_KEYS, store.cf["mirror"])
        batch.delete_range(*meta.ALL_KEYS, store.cf["views"])  # views are rebuilt from the mirror
        batch.delete_range(*meta.ALL_KEYS, store.cf["history"])  # ... and their history with them
        for key, _ in list(store.meta.items()):
            batch.delete(key, store.cf["meta"])
        meta.put_json(batch, store, meta.SNAPSHOT, SnapshotState(state="in_progress", slot=slot))
        meta.put_json(
            batch,
            store,
            meta.SOURCE,
            SourceInfo(
                system_id=system_id,
                timeline=timeline,
                database=database,
                publication=cfg.publication_name,
                slot=slot,
                text_encoding=self.text.encoding if self.text is not None else None,
            ),
        )
        infos = [
            TableInfo(
                table_id=i + 1,
                schema_name=t.schema,
                name=t.name,
                columns=[
                    ColumnInfo(name=c, type_oid=o, typmod=typmod, attnum=attnum, version=version)
                    for (c, o), (typmod, attnum, version) in zip(
                        t.columns, t.attributes, strict=True
                    )
                ],
                key=list(t.key),
                oid=t.oid,
                replica_identity=t.replica_identity,
            )
            for i, t in enumerate(tables)
        ]
        for info in infos:
            meta.put_table(batch, store, info)
        store.write(batch, sync=True)
        self.board.set_phase("snapshot")

        consistent_point, snapshot_name = self._create_slot(repl, slot)
        log.info(
            "created slot %s at %s; snapshot of %d table(s) begins",
            slot,
            consistent_point,
            len(tables),
        )
        load = SnapshotLoad(
            store,
            cfg.dsn,
            snapshot_name,
            tables,
            infos,
            workers=cfg.snapshot_workers or default_workers(),
            stop=self.stop,
            crash=self.crash,
            board=self.board,
            text=self.text,
            as_of=consistent_point,
        )
        counts = load.run()

        batch = store.new_batch()
        meta.put_applied(batch, store, consistent_point, None)
        for table_id, rows in counts.items():
            meta.put_row_count(batch, store, table_id, rows)
        meta.put_json(
            batch,
            store,
            meta.SNAPSHOT,
            SnapshotState(state="complete", slot=slot, consistent_point=str(consistent_point)),
        )
        store.write(batch, sync=True)
        log.info("snapshot complete at %s", consistent_point)
        return consistent_point

    def _publish_progress(self, record: RunProgress) -> None:
        """Write the board's record into the store (unsynced: progress, not state)."""
        store = self.store
        if store is None or self.closing.is_set():
            return
        batch = store.new_batch()
        meta.put_json(batch, store, meta.PROGRESS, record)
        store.write(batch, sync=False)

    def _check_history(
        self,
        store: Store,
        repl: ReplicationConnection,
        system_id: str,
        timeline: int,
        server_lsn: Lsn,
    ) -> None:
        """The server holds everything the store applied (store.sourcecheck.check_history);
        a new timeline that does is recorded, so that the next start compares with it."""
        source = store.source()
        if source is None:
            return
        history = (
            repl.timeline_history(timeline)
            if timeline != source.timeline and timeline > 1
            else None
        )
        check_history(
            source, store.applied_lsn(), system_id, timeline, server_lsn, history,
            self.config.data_dir,
        )  # fmt: skip
        if timeline != source.timeline:
            log.warning(
                "Postgres moved from timeline %d to %d after %s, which the store had not "
                "passed: following it",
                source.timeline,
                timeline,
                store.applied_lsn(),
            )
            batch = store.new_batch()
            meta.put_json(
                batch, store, meta.SOURCE, source.model_copy(update={"timeline": timeline})
            )
            store.write(batch, sync=True)

    # -- streaming -------------------------------------------------------------------------

    def _back_off(self, seconds: float) -> float:
        """Wait `seconds` (a stop request cuts it short); return the next, longer wait."""
        self.stop.wait(seconds)
        return min(seconds * 2, BACKOFF_MAX)

    def _stream_with_reconnect(self, repl: ReplicationConnection | None, database: str) -> Lsn:
        applier = self.applier
        assert applier is not None
        backoff = BACKOFF_FIRST
        while not self.stop.is_set():
            try:
                if repl is None:
                    repl = ReplicationConnection(self.config.dsn)
                self._start_streaming(repl, database)
                backoff = BACKOFF_FIRST
                self._stream(repl)
                return applier.synced_lsn
            except LargeTransaction as exc:
                # Replay from the synced LSN: this transaction then begins on an empty group
                # and is written in chunks with an undo log, in bounded memory.
                applier.discard_group()
                assert self.assembler is not None
                log.info(
                    "transaction committed at %s has over %s rows: applying it in chunks",
                    self.large_txns[self.assembler.final_lsn],
                    exc.args[0],
                )
            except SourceError as exc:
                if not exc.transient:
                    raise
                applier.discard_group()
                self.reconnects += 1
                log.warning("%s; reconnecting in %.1fs from %s", exc, backoff, applier.synced_lsn)
                backoff = self._back_off(backoff)
            finally:
                if repl is not None:
                    repl.close()
                    repl = None
        return applier.synced_lsn

    def _start_streaming(self, repl: ReplicationConnection, database: str) -> None:
        cfg, applier = self.config, self.applier
        assert applier is not None
        start = applier.synced_lsn
        conn = connect(cfg.dsn)
        try:
            setup.check_publication_exists(conn, cfg.publication_name)
            confirmed = self.slot_confirmed = self._wait_slot_usable(conn, database, start)
            # From where the slot stands, not from the applied LSN: Postgres would skip the
            # transactions in between itself, but then the store's own skip rule (the one
            # that counts: Assembler.begin) would never run. Resent, they are skipped here,
            # visibly (Assembler.skipped), and a server that resent wrongly could not double
            # an aggregate. The walsender never starts before confirmed_flush anyway.
            resend_from = min(start, confirmed) if confirmed is not None else start
            repl.start(
                cfg.slot_name, resend_from, cfg.publication_name, raw_text=self.text is not None
            )
            # Check again now that we hold the slot: nothing can move it under us any more.
            info = setup.slot_info(conn, cfg.slot_name)
            if info is not None:
                self._check_not_ahead(info, start)
        finally:
            conn.close()
        log.info(
            "streaming from slot %s at %s (applied up to %s)", cfg.slot_name, resend_from, start
        )
        self.streaming.set()

    def _wait_slot_usable(self, conn: object, database: str, start: Lsn) -> Lsn | None:
        """Wait while the slot is busy; check it. Returns its confirmed_flush_lsn."""
        # After a kill -9 the old walsender may hold the slot for a moment; wait, then fail.
        deadline = time.monotonic() + self.config.slot_busy_wait
        while True:
            info = setup.slot_info(conn, self.config.slot_name)
            if info is None:
                raise SlotError(
                    f"slot {self.config.slot_name!r} does not exist: it was dropped while the "
                    f"store had applied up to {start}, so the changes after that are gone",
                    hint="rebuild the store from a new snapshot: viewstore run --resnapshot ...",
                )
            dead = self.dead_walsender
            if dead is not None and info.active_pid == dead:
                log.warning(
                    "slot %s is still held by walsender pid %d of the dead connection: ending it",
                    self.config.slot_name,
                    dead,
                )
                setup.terminate_backend(conn, dead)
                self.dead_walsender = None
            try:
                setup.check_slot_usable(info, database)
            except SlotError:
                if info.active_pid is not None and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise
            self._check_not_ahead(info, start)
            return info.confirmed_flush_lsn

    def _check_not_ahead(self, info: setup.SlotInfo, start: Lsn) -> None:
        confirmed = info.confirmed_flush_lsn
        if confirmed is not None and confirmed > start:
            raise SlotError(
                f"slot {info.name!r} is ahead of the store: it confirmed {confirmed} but the "
                f"store in {self.config.data_dir} applied only up to {start}; the changes in "
                "between are gone (the slot was advanced, or dropped and recreated)",
                hint="rebuild the store from a new snapshot: viewstore run --resnapshot ...",
            )

    def _create_slot(self, repl: ReplicationConnection, slot: str) -> tuple[Lsn, str]:
        """`repl.create_slot`, bounded: while it waits for open transactions, say which; after
        `slot_create_wait` seconds cancel it and name them in the error."""
        cfg = self.config
        done = threading.Event()
        blockers: list[tuple[int, str]] = []

        def watch() -> None:
            began, every = time.monotonic(), cfg.slot_wait_report
            while not done.wait(every):
                try:
                    with contextlib.closing(connect(cfg.dsn)) as conn:
                        found = setup.transactions_with_xids(conn, repl.backend_pid)
                except ViewstoreError as exc:
                    log.warning("could not list the transactions slot %s waits for: %s", slot, exc)
                    continue
                waited = time.monotonic() - began
                if found:
                    log.warning(
                        "creating slot %s has waited %.0f s for %d transaction(s) to end: %s",
                        slot,
                        waited,
                        len(found),
                        "; ".join(text for _, text in found),
                    )
                if waited >= cfg.slot_create_wait:
                    blockers[:] = found
                    repl.cancel()
                    return
                every = min(max(every * 2, 1.0), 30.0, max(cfg.slot_create_wait - waited, 0.1))

        watcher = threading.Thread(target=watch, name="slot-wait", daemon=True)
        watcher.start()
        try:
            return repl.create_slot(slot)
        except SourceError:
            if not blockers:
                raise
            pids = ", ".join(str(pid) for pid, _ in blockers)
            raise SlotError(
                f"creating slot {slot} waited {cfg.slot_create_wait:.0f} s for transactions "
                f"that were open when it began: {'; '.join(text for _, text in blockers)}",
                hint=f"commit or end them (SELECT pg_terminate_backend(pid) for pid {pids}), "
                "then start again",
            ) from None
        finally:
            done.set()
            watcher.join()

    def _stream(self, repl: ReplicationConnection) -> None:
        cfg, applier = self.config, self.applier
        assert applier is not None
        relations: dict[int, TableState] = {}
        tables = applier.tables
        # Begin/Commit, the skip rule, keepalive positions, the large-transaction read-ahead.
        asm = self.assembler = Assembler(applier.synced_lsn, self.large_txns)
        skip = False  # asm.skip, as a local: it is read once per row
        # A server restored to an earlier point whose WAL passed the applied LSN again: the
        # stream shows it (ResumeCheck), until the first transaction after the store's last.
        last = applier.synced_last_commit
        resume = (
            None if last is None else ResumeCheck(*last, applier.synced_lsn, self.slot_confirmed)
        )
        last_status = last_progress = next_retention = next_catalog = time.monotonic()
        last_message, pinged = last_status, None  # when a message last came; when we pinged
        commit_interval, group_max = cfg.commit_interval, cfg.group_max_rows
        apply_insert, apply_update, apply_delete = applier.insert, applier.update, applier.delete
        if self.text is not None:  # a SQL_ASCII database: every row decoded first
            decode_row = self._transcoder(asm)
            insert, update, delete = apply_insert, apply_update, apply_delete

            def apply_insert(state: TableState, new: tuple) -> None:  # type: ignore[type-arg]
                insert(state, decode_row(state, new))

            def apply_update(
                state: TableState, kind: str | None, old: tuple | None, new: tuple
            ) -> None:  # type: ignore[type-arg]
                old = None if old is None else decode_row(state, old)
                update(state, kind, old, decode_row(state, new))

            def apply_delete(state: TableState, old: tuple) -> None:  # type: ignore[type-arg]
                delete(state, decode_row(state, old))

        def group_interval() -> float:
            """How long the open group may stay open: longer while catching up."""
            committed = applier.applied_time
            if committed is not None and time.time() - committed / 1e6 > cfg.catchup_lag:
                return cfg.catchup_commit_interval
            return commit_interval

        def sync_and_ack(*, at_begin: bool = False) -> None:
            # `at_begin`: between transactions, though the Begin of the next one has been read.
            nonlocal last_status
            if applier.group_pending and (at_begin or not asm.in_txn):
                self.crash("before-group-write")
                applier.commit_group()
                self.crash("after-group-write")
            self.received_lsn = max(asm.received, applier.synced_lsn)
            repl.send_status(self.received_lsn, applier.synced_lsn)
            last_status = time.monotonic()

        def idle_progress(now: float, force: bool) -> None:
            # Persist the keepalive position when nothing is in flight, so that the slot can
            # move on while only unpublished tables are written. A shutting-down walsender
            # waits for flush == its position, asking for replies back to back: `force`.
            nonlocal last_progress
            idle_pos = asm.idle_pos
            if (
                idle_pos is not None
                and not asm.in_txn
                and not applier.group_pending
                and idle_pos > applier.synced_lsn
                and (force or now - last_progress >= cfg.progress_interval)
            ):
                applier.record_progress(idle_pos)
                last_progress = now

        while True:
            if self.stop.is_set() and not asm.in_txn:
                sync_and_ack()
                return
            received_any = False
            # Everything libpq holds, in one tight loop; timers are checked between batches.
            for n, data in enumerate(repl.messages()):
                received_any = True
                if data[0] == 0x77 and len(data) > XLOGDATA_HEADER:
                    # XLogData: only its payload matters (commit LSNs come from Begin and
                    # Commit), so no frame object is built for it: this runs once per row.
                    msg = decode(data[XLOGDATA_HEADER:])
                else:  # a keepalive; DecodeError if malformed
                    reply = asm.keepalive(data)
                    if resume is not None:
                        resume.keepalive(asm.keepalive_pos)
                        resume = None if resume.done else resume
                    if reply:  # the server asks for a reply now
                        sync_and_ack()  # the pending group first: progress needs an empty one
                        idle_progress(time.monotonic(), force=True)
                        sync_and_ack()
                    continue

                cls = type(msg)
                try:
                    if cls is Insert:
                        if not skip:
                            apply_insert(relations[msg.relation_oid], msg.new)
                        continue
                    if cls is Update:
                        if not skip:
                            apply_update(
                                relations[msg.relation_oid], msg.old_kind, msg.old, msg.new
                            )
                        continue
                    if cls is Delete:
                        if not skip:
                            apply_delete(relations[msg.relation_oid], msg.old)
                        continue
                    if cls is Truncate:
                        if not skip:
                            for oid in msg.relation_oids:
                                applier.truncate(relations[oid])
                        continue
                except LargeTransaction as exc:
                    # Read on to its Commit without applying: the end of its commit record
                    # keys its history, and the chunked replay needs it from the start.
                    asm.read_ahead(exc)
                    skip = True
                    continue
                if cls is Begin:
                    if resume is not None:
                        resume.begin(msg.final_lsn)
                        resume = None if resume.done else resume
                    large_end = asm.begin(msg, applier.applied_lsn)  # skipped if applied before
                    skip = asm.skip
                    if large_end is not None:
                        sync_and_ack(at_begin=True)  # what precedes it, durable: an empty group
                        applier.begin_large(large_end)
                    applier.begin_transaction(msg.commit_time + PG_EPOCH_US, msg.xid)
                elif cls is Commit:
                    if resume is not None:
                        resume.commit(asm.xid, msg.end_lsn, msg.commit_time + PG_EPOCH_US)
                    if asm.commit(msg):  # raises after a read-ahead: replay it in chunks
                        large = applier.large
                        applier.end_transaction(msg.end_lsn, msg.commit_time + PG_EPOCH_US)
                        if (
                            large
                            or time.monotonic() - applier.group_started >= group_interval()
                            or applier.group_rows >= group_max
                        ):
                            sync_and_ack()
                    skip = False
                    if n >= 5000:
                        break  # look at the clock and the stop flag now and then
                elif cls is Relation:
                    if msg.oid in relations:
                        # Sent again mid-stream: the table's cache entry was invalidated,
                        # by DDL among other things. Look at the catalog now.
                        next_catalog = 0.0
                    relations[msg.oid] = self._relation(msg, tables)
                # Origin, Type and Message carry nothing the mirror needs.

            now = time.monotonic()
            if now >= next_catalog:
                self._check_catalog()
                next_catalog = now + cfg.catalog_check_interval
            if (
                self.retention is not None
                and now >= next_retention
                and not asm.in_txn
                and not applier.group_pending
                and not applier.large
            ):
                # Between groups, so that compaction sees only durable history.
                done = apply_retention(applier.store, self.retention, catalog=CATALOG)
                next_retention = now + (cfg.history_retention_interval if done else 0.5)
            if received_any:
                last_message, pinged = now, None
                # A group is bounded in time even when the stream never pauses (keepalives
                # keep coming while unpublished tables are written).
                group_due = (
                    applier.group_pending and now - applier.group_started >= group_interval()
                )
                if group_due or now - last_status >= cfg.status_interval:
                    sync_and_ack()  # also during a long transaction: keeps the walsender calm
                repl.wait(0)
                continue
            # Caught up with the server: make the group durable now (group commit ends).
            idle_progress(now, force=False)
            if applier.group_pending or now - last_status >= cfg.status_interval:
                sync_and_ack()
            if now - last_message >= cfg.stream_silence:
                if pinged is None:
                    received = max(asm.received, applier.synced_lsn)
                    repl.send_status(received, applier.synced_lsn, reply=True)
                    pinged = now
                elif now - pinged >= cfg.stream_silence:
                    self.dead_walsender = repl.backend_pid
                    raise SourceError(
                        f"no message from Postgres for {now - last_message:.1f} s, and none "
                        f"{now - pinged:.1f} s after asking for a reply: the connection is "
                        "dead (a network path that drops packets without a reset)",
                        transient=True,
                    )
            repl.wait(0.1)

    def _check_catalog(self) -> None:
        """The published tables are still the ones the store mirrors (store.sourcecheck)."""
        cfg, applier = self.config, self.applier
        assert applier is not None
        conn = connect(cfg.dsn)
        try:
            published = setup.published_tables(conn, cfg.publication_name)
            # After the list: a publication dropped meanwhile lists no tables, which would
            # read as tables that left it.
            setup.check_publication(conn, cfg.publication_name)
            stored = {name: state.info for name, state in applier.tables.items()}
            check_tables(conn, cfg.publication_name, stored, published)
        finally:
            conn.close()

    def _relation(self, msg: Relation, tables: dict[str, TableState]) -> TableState:
        """Check an in-stream Relation message against the schema the mirror was built with."""
        name = f"{msg.namespace}.{msg.name}"
        state = tables.get(name)
        if state is None:
            raise UnsupportedError(
                f"changes arrived for table {name}, which the snapshot did not copy",
                hint=RESNAPSHOT,
            )
        check_relation(state.info, msg)
        return state
