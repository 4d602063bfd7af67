#!/usr/bin/env python3
"""History benchmark (issue 4): what the per-view history costs to write, and how fast it reads.

1. Write overhead, through Postgres. A throwaway Postgres with the seed's schema and view
   (viewstore/demo.py), 1,000 players and `--initial-scores` scores. Stores following one
   publication, each on its own slot, take their snapshot and build the view, and are stopped;
   then the load is committed with every store stopped: `--single-txns` transactions that each
   insert one score for a random player, and `--multi-txns` transactions of `--multi-rows` score
   inserts each, in a seeded random order (default 50,000 + 500 x 100 = 100,000 score rows).
   Each store then catches up on the same WAL, one at a time: half of them with
   RunConfig(history=True) (what `viewstore run` does), half with history=False (the view rows
   only; a benchmarks-only switch), in the order with, without, without, with, ... (`--rounds
   4`: 8 stores), so that neither side always runs first; the figures are the medians. A store
   is timed inside its own process (the run is a small wrapper around Pipeline, started as a
   child), from its "streaming from slot" log line to the end of the synced group write that
   holds the last transaction, in wall time and in the process's CPU time (RocksDB's background
   threads included: on a shared 2-core machine the CPU time is the steadier figure); the time
   from that log line until its slot's confirmed_flush_lsn passes the WAL position after the
   load (how bench_views.py times it) is recorded too. The stores also measure, in their main
   thread's CPU time, what building the history entries and putting them into the group's
   batch costs (the applier's _end_views less the view engine's part), and their synced group
   writes. Every store's view is then compared with Postgres's (REFRESH, then SELECT), and each
   store's history is counted.

2. As-of reads at `--keys` x `--versions` history entries (default 100,000 x 100 = 10M). Far too
   many to produce through Postgres in reasonable time, so they are NOT ingested: they are
   written straight into a fresh store with the changelog's own writer
   (`history.changelog.entries`, the function the applier calls), for a synthetic view shaped
   like the seed's leaderboard (player_id int, name text, total_score numeric, rows packed with
   codecs.value.pack_fields as the engine packs them) with a catalog entry (ViewInfo, state ready)
   and an applied LSN, so that the readers and the DuckDB copy find it. The store holds nothing
   else (no mirror, no current view rows). Version 0 of every row is its 'initial' entry at the
   view's build LSN; versions 1.. are updates, one per transaction, each row's total growing,
   rows in a new random order every round, at increasing LSNs with commit times and xids.
   After the write the store is flushed and its background compactions allowed to finish.
   Then, on a read-only open of the store (a reader process):
   - `row_as_of` for `--lookups` random (row key, LSN) pairs, LSNs uniform over the history,
     and as many through `viewstore.store.viewread.query_rows(..., where=..., as_of=...)` (the
     reader's path on an open store), interleaved: p50/p99 of each in wall time, and in the
     thread's CPU time, which leaves out the time the process waited for a core (the machine
     is shared: the JSON says how much of a core the loop had); every answer is checked
     against the generator;
   - the same lookups through `viewstore.open(dir).query(view, where=..., as_of=...)`, which
     opens the store for each call (`--api-calls` calls);
   - `rows_as_of` of the whole view at random LSNs (3 times), and once through the API.

3. The DuckDB copy: `historycopy.sync(data_dir)` of the whole history from scratch (rows/s), then
   `--add-entries` more entries are written the same way and synced incrementally, five times
   (`--incremental-syncs`; the median and all of them together); a sync with nothing new shows
   its fixed cost.

4. Window queries over the copy's table (the 10M rows, before the incremental add), each timed
   3 times (median; the text of each is in the JSON): each change's rank among all changes by
   total_score, reduced to each player's best rank; the biggest single climb of a player's
   total by lag() over the player's changes in LSN order, and the same answer read from the
   before_total_score column the copy already holds; and the leaderboard top 10 as of a random
   LSN through the copy's <view>_as_of macro, checked against rows_as_of.

5. The Iceberg export (`--part export`, or all): `viewstore export`'s function
   (store.lakeexport.export) of the whole history to a local warehouse and a SQLite catalog
   from scratch (rows/s, its CPU time, commits, Parquet files and bytes), with nothing new, and
   of `--add-entries` more entries incrementally; every row is checked to be there once (counts
   by pyiceberg's scan), and a scan of an LSN range in the middle plans fewer files than the
   whole table (min/max statistics; the synthetic history spans less than a day of commit
   time, so the day partitions do not split it).

    scripts/bench_history.py --part export --out bench/results/history_export_10m.json
    scripts/bench_history.py           # bench/results/history.json (~20 min on 2 cores)
    scripts/bench_history.py --quick   # 3,000 score rows, 200k entries: a smoke test
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from array import array
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from bench_common import machine_info, source_state
from bench_views import (
    CHILDREN,
    PG_SETTINGS,
    VIEW,
    log,
    lsn_of,
    seed_leaderboard,
    stop,
    wait_confirmed,
    wait_streaming,
)

import viewstore
from viewstore.codecs.key import encode_key, prefix_end
from viewstore.codecs.value import pack_fields
from viewstore.history import checkpoint, duckdb_copy
from viewstore.history.changelog import _rows_by_seeks, change_key, entries, row_as_of, rows_as_of
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store import db as meta
from viewstore.store import historycopy, lakeexport
from viewstore.store.db import Store, scan
from viewstore.store.engine import view_prefix
from viewstore.store.viewcatalog import ViewInfo, put_info, stored_views
from viewstore.store.viewread import find_view, query_rows
from viewstore.views.schema import ColumnInfo

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
VIEW_NAME = "player_total_scores"
PUBLICATION = "bench_pub"
WRITE_BATCH = 50_000  # history entries per (unsynced) WriteBatch of the synthetic writer
_MASK64 = (1 << 64) - 1

# -- 1. write overhead through Postgres ----------------------------------------------------


def run_store(argv: list[str]) -> None:
    """The child process of part 1: `viewstore run`'s pipeline with RunConfig(history=...),
    and what it measured written to a JSON file on exit: when streaming began (its log line)
    and when the last synced group that held transactions was written (monotonic clock, and
    the process's CPU time then); and, in this thread's CPU time, the time spent in the views'
    end of transaction (Applier._end_views: the engine's output rows, then the history entries
    built and put into the group's batch) and in the engine's part of it, whose difference is
    the history's own Python cost, and in the synced group writes."""
    data, dsn, views, history, timing_path = argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    from viewstore.store import engine, pipeline

    marks: dict[str, Any] = {"groups": 0, "txns": 0, "streaming": None, "last_group": None}
    marks.update(end_views_cpu=0.0, engine_end_cpu=0.0, group_write_s=0.0, group_write_cpu=0.0)

    def cpu() -> float:  # this process, RocksDB's background threads included
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    class StreamingMark(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if marks["streaming"] is None and record.getMessage().startswith("streaming from"):
                marks["streaming"] = time.monotonic()
                marks["streaming_cpu"] = cpu()

    engine_end = engine.ViewEngine.end_transaction

    def timed_engine_end(self: Any) -> Any:
        t = time.thread_time()
        try:
            return engine_end(self)
        finally:
            marks["engine_end_cpu"] += time.thread_time() - t

    class TimedApplier(pipeline.Applier):
        def _end_views(self, *args: Any) -> None:
            t = time.thread_time()
            super()._end_views(*args)
            marks["end_views_cpu"] += time.thread_time() - t

        def commit_group(self) -> Lsn:
            txns = self.group_txns
            t, c = time.monotonic(), time.thread_time()
            synced = super().commit_group()
            if txns:
                marks["last_group"] = now = time.monotonic()
                marks["last_group_cpu"] = cpu()
                marks["group_write_s"] += now - t
                marks["group_write_cpu"] += time.thread_time() - c
                marks["groups"] += 1
                marks["txns"] += txns
            return synced

    logging.getLogger("viewstore").addHandler(StreamingMark())
    engine.ViewEngine.end_transaction = timed_engine_end  # type: ignore[method-assign]
    pipeline.Applier = TimedApplier  # type: ignore[misc]
    config = pipeline.RunConfig(
        dsn=dsn,
        data_dir=Path(data),
        publication=PUBLICATION,
        slot=Path(data).name,
        views_file=Path(views),
        history=history == "on",
    )
    runner = pipeline.Pipeline(config)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runner.stop.set())
    final = runner.run()
    marks["final_lsn"] = str(final)
    Path(timing_path).write_text(json.dumps(marks))


def start_store(pg: ThrowawayPostgres, data: Path, views: Path, history: bool) -> Any:
    data.with_suffix(".log").write_text("")
    out = open(data.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
    argv = [
        sys.executable, str(Path(__file__).resolve()), "_store",
        str(data), pg.dsn, str(views), "on" if history else "off", str(data.with_suffix(".json")),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    CHILDREN.append(proc)
    return proc


def load(conn: psycopg.Connection[Any], args: argparse.Namespace) -> dict[str, Any]:
    """The WAL both kinds of store catch up on, committed while no store runs."""
    rng = random.Random(1)
    kinds = [1] * args.single_txns + [args.multi_rows] * args.multi_txns
    rng.shuffle(kinds)
    start = lsn_of(conn, "SELECT pg_current_wal_insert_lsn()::text")
    began = time.monotonic()
    for n in kinds:
        if n == 1:
            conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)",
                (rng.randint(1, args.players), Decimal(rng.randint(0, 10000)) / 100),
            )
        else:
            conn.execute(
                "INSERT INTO player_scores (player_id, score)"
                " SELECT unnest(%s::int[]), unnest(%s::numeric[])",
                (
                    [rng.randint(1, args.players) for _ in range(n)],
                    [Decimal(rng.randint(0, 10000)) / 100 for _ in range(n)],
                ),
            )
    seconds = time.monotonic() - began
    target = lsn_of(conn, "SELECT pg_current_wal_insert_lsn()::text")
    assert start is not None and target is not None
    return {
        "transactions": len(kinds),
        "single_row_txns": args.single_txns,
        "multi_row_txns": args.multi_txns,
        "rows_per_multi_row_txn": args.multi_rows,
        "score_rows": args.single_txns + args.multi_txns * args.multi_rows,
        "load_seconds": round(seconds, 2),
        "wal_bytes": int(target - start),
        "target_lsn": str(target),
    }


def count_history(data: Path) -> dict[str, int]:
    """The view's history entries in a store: all, and those of its build."""
    with Store.open(data, readonly=True) as store:
        info = stored_views(store)[VIEW_NAME]
        built = int(Lsn.parse(info.built_at or "0/0"))
        low = change_key(info.view_id, 0, 0)
        high = prefix_end(low[:3])
        total = initial = 0
        it = store.history.iter()
        it.seek(low)
        while it.valid() and it.key() < high:
            total += 1
            initial += int.from_bytes(it.key()[3:11], "big") == built
            it.next()
    return {"entries": total, "initial_entries": initial, "entries_after_build": total - initial}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def ingest_overhead(pg: ThrowawayPostgres, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    views = work / "views.sql"
    views.write_text(VIEW)
    # with, without, without, with, ...: neither kind of store always goes first.
    order = [(True, False), (False, True)]
    stores = [
        (f"{'history' if h else 'nohistory'}_{r + 1}", h)
        for r in range(args.rounds)
        for h in order[r % 2]
    ]
    out: dict[str, Any] = {}
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        seed_leaderboard(conn, args.players, args.initial_scores)
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE players, player_scores")
        for name, history in stores:
            data = work / name
            proc = start_store(pg, data, views, history)
            seconds = wait_streaming(proc, data, 600)
            stop(proc)
            log(f"{name}: snapshot and view build took {seconds:.1f} s")

        log("committing the load with every store stopped")
        workload = load(conn, args)
        out["workload"] = workload
        target = Lsn.parse(workload["target_lsn"])
        log(
            f"{workload['transactions']:,} txns, {workload['score_rows']:,} score rows, "
            f"{workload['wal_bytes'] / 1e6:.1f} MB of WAL in {workload['load_seconds']} s"
        )

        runs = []
        for name, history in stores:
            data = work / name
            proc = start_store(pg, data, views, history)
            wait_streaming(proc, data, 600)
            began = time.monotonic()
            wait_confirmed(conn, name, target, proc)
            polled = time.monotonic() - began
            stop(proc)
            marks = json.loads(data.with_suffix(".json").read_text())
            seconds = marks["last_group"] - marks["streaming"]
            cpu_seconds = marks["last_group_cpu"] - marks["streaming_cpu"]
            if marks["txns"] != workload["transactions"]:
                raise SystemExit(f"{name} applied {marks['txns']} txns, not all of the load")
            run = {
                "store": name,
                "history": history,
                "seconds": round(seconds, 3),
                "slot_poll_seconds": round(polled, 3),
                "cpu_seconds": round(cpu_seconds, 3),
                "cpu_us_per_txn": round(cpu_seconds / workload["transactions"] * 1e6, 1),
                "rows_per_s": round(workload["score_rows"] / seconds),
                "us_per_txn": round(seconds / workload["transactions"] * 1e6, 1),
                "groups": marks["groups"],
                # thread CPU time of the main thread in parts of the apply (see run_store)
                "engine_end_of_txn_cpu_s": round(marks["engine_end_cpu"], 3),
                "history_python_cpu_s": round(
                    marks["end_views_cpu"] - marks["engine_end_cpu"] if history else 0.0, 3
                ),
                "group_writes_s": round(marks["group_write_s"], 3),
                "group_writes_cpu_s": round(marks["group_write_cpu"], 3),
                **count_history(data),
                "data_dir_bytes": dir_bytes(data),
            }
            runs.append(run)
            log(
                f"{name}: {run['rows_per_s']:,} rows/s, {run['us_per_txn']} µs/txn "
                f"({seconds:.2f} s; slot poll {polled:.2f} s), "
                f"{run['entries_after_build']:,} history entries"
            )

        conn.execute(f"REFRESH MATERIALIZED VIEW {VIEW_NAME}")
        want = {
            (r[0], r[1], str(r[2]))
            for r in conn.execute(f"SELECT * FROM {VIEW_NAME}").fetchall()  # type: ignore[index]
        }
        for name, _ in stores:
            got = {
                (r["player_id"], r["name"], str(r["total_score"]))
                for r in viewstore.open(work / name).query(VIEW_NAME)
            }
            if got != want:
                raise SystemExit(f"{name}: the view differs from Postgres")
        out["views_equal_postgres"] = True
        with Store.open(work / stores[0][0], readonly=True) as store:
            out["engine_view_info"] = stored_views(store)[VIEW_NAME].model_dump(
                include={"columns", "key_columns", "sort_columns", "aggregate"}
            )

    out["runs"] = runs
    for kind, flag in (("with_history", True), ("without_history", False)):
        mine = [r for r in runs if r["history"] is flag]
        seconds = statistics.median(r["seconds"] for r in mine)
        cpu_seconds = statistics.median(r["cpu_seconds"] for r in mine)
        txns = workload["transactions"]
        out[kind] = {
            "seconds_median": round(seconds, 3),
            "rows_per_s": round(workload["score_rows"] / seconds),
            "us_per_txn": round(seconds / txns * 1e6, 1),
            "cpu_seconds_median": round(cpu_seconds, 3),
            "cpu_us_per_txn": round(cpu_seconds / txns * 1e6, 1),
            "group_writes_us_per_txn": round(
                statistics.median(r["group_writes_s"] for r in mine) / txns * 1e6, 1
            ),
            "group_writes_cpu_us_per_txn": round(
                statistics.median(r["group_writes_cpu_s"] for r in mine) / txns * 1e6, 1
            ),
        }
    w, wo = out["with_history"], out["without_history"]
    out["cpu_ratio_with_to_without"] = round(w["cpu_seconds_median"] / wo["cpu_seconds_median"], 3)
    out["rows_per_s_ratio_with_to_without"] = round(w["rows_per_s"] / wo["rows_per_s"], 3)
    out["slowdown_percent"] = round((wo["rows_per_s"] / w["rows_per_s"] - 1) * 100, 1)
    entries_written = statistics.median(r["entries_after_build"] for r in runs if r["history"])
    out["history_entries_per_run"] = entries_written
    out["us_per_history_entry"] = round(
        (w["seconds_median"] - wo["seconds_median"]) / entries_written * 1e6, 2
    )
    out["cpu_us_per_history_entry"] = round(
        (w["cpu_seconds_median"] - wo["cpu_seconds_median"]) / entries_written * 1e6, 2
    )
    # Measured inside the with-history stores: the entries built and put into the batch.
    own = statistics.median(r["history_python_cpu_s"] for r in runs if r["history"])
    out["history_python_cpu_us_per_entry"] = round(own / entries_written * 1e6, 2)
    out["history_python_cpu_us_per_txn"] = round(own / workload["transactions"] * 1e6, 1)
    out["history_python_cpu_percent"] = round(own / w["cpu_seconds_median"] * 100, 1)
    return out


# -- 2. a synthetic 10M-entry history -----------------------------------------------------


class History:
    """The synthetic history: `keys` leaderboard rows, each written in `versions` versions
    (version 0 the 'initial' row at the build LSN), and what every row was at every LSN."""

    VIEW_ID = 1
    BUILT_AT = Lsn((1 << 32) | 0x1000)  # 1/1000
    T0 = 1_798_761_600_000_000  # 2027-01-01 UTC, µs: the first update's commit time

    def __init__(self, keys: int, versions: int, checkpoint_interval: int = 10_000) -> None:
        self.keys = keys
        # A checkpoint after max(interval, keys) changes, as the applier writes them (0: none).
        self.checkpoint_every = max(checkpoint_interval, keys) if checkpoint_interval else 0
        self.since_checkpoint = 0
        self.checkpoints: list[int] = []
        self.checkpoint_bytes = 0
        self.versions = versions
        self.lsns = array("Q", bytes(8 * keys * versions))  # [k * versions + v]
        self.okeys = [encode_key([k + 1]) for k in range(keys)]
        self.cents = [0] * keys  # each row's latest total
        self.last_row: list[bytes | None] = [None] * keys
        self.last_lsn = int(self.BUILT_AT)
        self.xid = 1000
        self.entries = 0
        self.rng = random.Random(7)

    @staticmethod
    def increment(k: int, v: int) -> int:
        """Cents added to row k's total by version v (version 0: its initial total): 0 to
        99.99, from a hash of (k, v) (splitmix64), so that no two rows share a history."""
        x = ((k << 8 | v) * 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        return (x ^ (x >> 31)) % 10000 + (10000 if v == 0 else 0)

    def expected_cents(self, k: int, v: int) -> int:
        return sum(self.increment(k, i) for i in range(v + 1))

    def version_at(self, k: int, lsn: int) -> int:
        base = k * self.versions
        done = min(self.versions, self.written_versions)
        return bisect.bisect_right(self.lsns, lsn, base, base + done) - base - 1

    def commit_time(self, lsn: int) -> int:
        return self.T0 + (lsn - int(self.BUILT_AT)) // 4  # 4 bytes of WAL a µs

    @staticmethod
    def row(k: int, cents: int) -> list[Any]:
        return [k + 1, f"player {k + 1}", Decimal(f"{cents // 100}.{cents % 100:02d}")]

    def view_info(self) -> ViewInfo:
        return ViewInfo(
            name=VIEW_NAME,
            view_id=self.VIEW_ID,
            sql=VIEW.split(" AS\n", 1)[1].rstrip().rstrip(";"),
            fingerprint="synthetic history (bench_history.py)",
            state="ready",
            columns=[
                ColumnInfo(name="player_id", type_oid=23),
                ColumnInfo(name="name", type_oid=25),
                ColumnInfo(name="total_score", type_oid=1700),
            ],
            key_columns=[0],
            sort_columns=[1, 2],
            aggregate=True,
            built_at=str(self.BUILT_AT),
        )

    def write(self, data: Path, rounds: int, limit: int | None = None) -> float:
        """Write `rounds` more versions of the rows (the first call: version 0 included), at
        most `limit` entries; returns the seconds it took, catalog and applied LSN included."""
        began = time.perf_counter()
        with Store.open(data) as store:
            hcf = store.cf["history"]
            batch, in_batch, done = store.new_batch(), 0, 0
            first = self.entries == 0
            for _ in range(rounds):
                v = self.entries // self.keys if not first else 0
                order = list(range(self.keys))
                if not first:
                    self.rng.shuffle(order)
                for seq, k in enumerate(order, 1):
                    if limit is not None and done >= limit:
                        break
                    if first:  # the build: every row at one LSN, seq from 1, no time or xid
                        lsn, seq_no, when, xid = int(self.BUILT_AT), seq, None, None
                    else:  # one transaction per change
                        self.last_lsn += self.rng.randint(0x80, 0x180)
                        self.xid += 1
                        lsn, seq_no, xid = self.last_lsn, 0, self.xid
                        when = self.commit_time(self.last_lsn)
                    self.cents[k] += self.increment(k, v)
                    after = pack_fields(self.row(k, self.cents[k]))
                    pairs = entries(
                        self.VIEW_ID, lsn, seq_no, self.okeys[k], self.last_row[k], after,
                        when, xid,
                    )  # fmt: skip
                    for key, value in pairs:
                        batch.put(key, value, hcf)
                    self.last_row[k] = after
                    if v < self.versions:
                        self.lsns[k * self.versions + v] = lsn
                    self.entries += 1
                    done += 1
                    in_batch += 1
                    self.since_checkpoint += 1
                    if self.checkpoint_every and self.since_checkpoint >= self.checkpoint_every:
                        # The view as of this transaction, by the applier's own writer.
                        rows = [(self.okeys[i], r) for i, r in enumerate(self.last_row) if r]
                        checkpoint.put(batch, hcf, self.VIEW_ID, lsn, rows)
                        self.checkpoints.append(lsn)
                        self.checkpoint_bytes += sum(len(k) + 11 + len(r) for k, r in rows)
                        self.since_checkpoint = 0
                        in_batch += len(rows)
                    if in_batch >= WRITE_BATCH:
                        store.write(batch, sync=False)
                        batch, in_batch = store.new_batch(), 0
                first = False
            # The catalog entry and the applied LSN in the synced write. A history key is the end
            # of its transaction's commit record, so the applied LSN is the last one.
            put_info(batch, store, self.view_info())
            applied = Lsn(self.last_lsn)
            meta.put_applied(batch, store, applied, self.commit_time(self.last_lsn))
            store.write(batch, sync=True)
            seconds = time.perf_counter() - began
            store.history.flush(True)
            settle(store)
        return seconds

    @property
    def written_versions(self) -> int:
        return self.entries // self.keys


def settle(store: Store, timeout: float = 900) -> float:
    """Wait for the history column family's background compactions to finish."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        pending = store.history.property_int_value("rocksdb.compaction-pending")
        running = store.history.property_int_value("rocksdb.num-running-compactions")
        if not pending and not running:
            break
        time.sleep(0.5)
    return time.monotonic() - began


def percentiles(us: list[float]) -> dict[str, float]:
    s = sorted(us)

    def at(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 1)

    return {
        "n": len(s),
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "max_us": round(s[-1], 1),
        "mean_us": round(statistics.fmean(s), 1),
    }


def as_of_reads(data: Path, hist: History, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(11)
    lo, hi = int(History.BUILT_AT), hist.last_lsn

    def draw(n: int) -> list[tuple[int, int]]:
        # Fresh (row, LSN) pairs for each measurement: the block cache is shared by every open
        # in a process, and a pair read before would find its blocks there.
        return [(rng.randrange(hist.keys), rng.randint(lo, hi)) for _ in range(n)]

    out: dict[str, Any] = {}

    def check(k: int, lsn: int, row: Any) -> None:
        want = hist.row(k, hist.expected_cents(k, hist.version_at(k, lsn)))
        if row is None or list(row) != want:
            raise SystemExit(f"as of {Lsn(lsn)}: row {k + 1} is {row}, expected {want}")

    vid = History.VIEW_ID
    with Store.open(data, readonly=True) as store:
        info = find_view(store, VIEW_NAME)
        # row_as_of, and the same lookup through the reader's path on an open store (filters,
        # check_as_of, then row_as_of), interleaved so that a busy moment of the machine
        # falls on both alike; each on its own random pairs. Each call is timed in wall time
        # and in this thread's CPU time (the CPU stamps outside the wall ones): on a shared
        # machine a wall-time p99 is mostly the scheduler, the CPU time is the read's own work.
        wall_ns, cpu_ns = time.perf_counter_ns, time.thread_time_ns
        empty = []
        for _ in range(10_000):
            c0, w0 = cpu_ns(), wall_ns()
            w1, c1 = wall_ns(), cpu_ns()
            empty.append(((w1 - w0) / 1000, (c1 - c0) / 1000))
        direct, direct_cpu, api, api_cpu = [], [], [], []
        wall, cpu = time.perf_counter(), time.process_time()
        for (k, lsn), (k2, lsn2) in zip(draw(args.lookups), draw(args.lookups), strict=True):
            okey = hist.okeys[k]
            c0, w0 = cpu_ns(), wall_ns()
            row = row_as_of(store, vid, okey, lsn)
            w1, c1 = wall_ns(), cpu_ns()
            c2, w2 = cpu_ns(), wall_ns()
            rows = query_rows(store, info, where={"player_id": k2 + 1}, as_of=Lsn(lsn2))
            w3, c3 = wall_ns(), cpu_ns()
            direct.append((w1 - w0) / 1000)
            direct_cpu.append((c1 - c0) / 1000)
            api.append((w3 - w2) / 1000)
            api_cpu.append((c3 - c2) / 1000)
            check(k, lsn, row)
            check(k2, lsn2, rows[0])
        share = (time.process_time() - cpu) / (time.perf_counter() - wall)
        out["row_as_of"] = percentiles(direct)
        out["row_as_of_thread_cpu"] = percentiles(direct_cpu)
        out["query_rows_open_store"] = percentiles(api)
        out["query_rows_open_store_thread_cpu"] = percentiles(api_cpu)
        out["timer_overhead_us"] = {
            "wall_p50": percentiles([w for w, _ in empty])["p50_us"],
            "thread_cpu_p50": percentiles([c for _, c in empty])["p50_us"],
        }
        out["lookup_loop_cpu_share"] = round(share, 3)  # < 1: the process waited (I/O, CPU)
        log(f"row_as_of: {out['row_as_of']}; CPU {out['row_as_of_thread_cpu']}")
        log(
            f"query_rows on an open store: {out['query_rows_open_store']}; CPU "
            f"{out['query_rows_open_store_thread_cpu']} (the process had {share:.0%} of a core)"
        )

        whole, whole_cpu, whole_lsns = [], [], []
        for _ in range(5):
            lsn = rng.randint(lo, hi)
            whole_lsns.append(lsn)
            t, c = time.perf_counter(), time.thread_time()
            rows = rows_as_of(store, vid, lsn)
            whole.append(time.perf_counter() - t)
            whole_cpu.append(time.thread_time() - c)
            if len(rows) != hist.keys:
                raise SystemExit(f"rows_as_of: {len(rows)} rows, expected {hist.keys}")
            for k in rng.sample(range(hist.keys), min(200, hist.keys)):
                check(k, lsn, rows[hist.okeys[k]])
        out["rows_as_of_whole_view"] = {
            "rows": hist.keys,
            "seconds": [round(x, 3) for x in whole],
            "median_ms": round(statistics.median(whole) * 1000, 1),
            "thread_cpu_seconds": [round(x, 3) for x in whole_cpu],
            "thread_cpu_median_ms": round(statistics.median(whole_cpu) * 1000, 1),
            "us_per_row": round(statistics.median(whole) / hist.keys * 1e6, 2),
            "lsns": [str(Lsn(x)) for x in whole_lsns],
        }
        log(f"rows_as_of whole view: {out['rows_as_of_whole_view']}")
        # The same read by one seek per row key (what rows_as_of did before checkpoints), once.
        lsn = rng.randint(lo, hi)
        t, c = time.perf_counter(), time.thread_time()
        rows = _rows_by_seeks(store, vid, lsn)
        seconds, cpu_seconds = time.perf_counter() - t, time.thread_time() - c
        if rows != rows_as_of(store, vid, lsn):
            raise SystemExit(f"as of {Lsn(lsn)}: the seek path and rows_as_of differ")
        out["rows_by_seeks_whole_view_ms"] = round(seconds * 1000, 1)
        out["rows_by_seeks_whole_view_thread_cpu_ms"] = round(cpu_seconds * 1000, 1)
        log(f"the same by one seek per row key: {out['rows_by_seeks_whole_view_ms']} ms")

    reader = viewstore.open(data)
    times = []
    for k, lsn in draw(args.api_calls):
        t = time.perf_counter_ns()
        rows = reader.query(VIEW_NAME, where={"player_id": k + 1}, as_of=Lsn(lsn))
        times.append((time.perf_counter_ns() - t) / 1000)
        check(k, lsn, list(rows[0].values()))
    out["api_query_point"] = percentiles(times)
    log(f"viewstore.open(dir).query(where=..., as_of=...): {out['api_query_point']}")
    lsn = rng.randint(lo, hi)
    t = time.perf_counter()
    rows = reader.query(VIEW_NAME, as_of=Lsn(lsn))
    out["api_query_whole_view_ms"] = round((time.perf_counter() - t) * 1000, 1)
    assert len(rows) == hist.keys
    log(f"viewstore.open(dir).query(as_of=...), whole view: {out['api_query_whole_view_ms']} ms")
    return out


# -- 3. and 4. the DuckDB copy -------------------------------------------------------------

Q_RANK = f"""SELECT player_id, min(r) AS best_rank, count(*) AS versions
FROM (SELECT player_id, rank() OVER (ORDER BY total_score DESC) AS r
      FROM {VIEW_NAME} WHERE op <> 'delete')
GROUP BY player_id
ORDER BY best_rank, player_id
LIMIT 10"""
# lsn_text() and round() only on the 10 rows of the answer: lsn_text is a printf, and over
# every row it would cost more than the window itself.
Q_LAG = f"""SELECT player_id, lsn_text(lsn) AS at_lsn, round(climb, 2) AS climb
FROM (SELECT player_id, lsn, total_score - prev AS climb
      FROM (SELECT player_id, lsn, total_score,
                   lag(total_score) OVER (PARTITION BY player_id ORDER BY lsn, seq) AS prev
            FROM {VIEW_NAME} WHERE op <> 'delete')
      WHERE prev IS NOT NULL
      ORDER BY climb DESC, player_id, lsn
      LIMIT 10)
ORDER BY climb DESC, player_id, lsn"""
Q_DIRECT = f"""SELECT player_id, lsn_text(lsn) AS at_lsn, round(climb, 2) AS climb
FROM (SELECT player_id, lsn, total_score - before_total_score AS climb
      FROM {VIEW_NAME} WHERE op = 'update'
      ORDER BY climb DESC, player_id, lsn
      LIMIT 10)
ORDER BY climb DESC, player_id, lsn"""
Q_ASOF_TOP = f"""SELECT player_id, total_score FROM {VIEW_NAME}_as_of($1)
ORDER BY total_score DESC, player_id
LIMIT 10"""
QUERIES = {  # name: (SQL, what it computes, the LSN $1 stands for)
    "rank_all_changes_by_total_score": (
        Q_RANK,
        "rank() of every change among all changes of the view by total_score (one global "
        "sort of every row), then each player's best rank; the top 10 players",
        None,
    ),
    "biggest_climb_by_lag": (
        Q_LAG,
        "lag(total_score) over each player's changes in (lsn, seq) order: the 10 biggest "
        "single-change climbs of a player's total",
        None,
    ),
    "biggest_climb_from_before_column": (
        Q_DIRECT,
        "the same answer without a window: the copy keeps each change's before image "
        "(before_total_score), so a climb is one subtraction per row",
        None,
    ),
    "top10_as_of_random_lsn": (
        Q_ASOF_TOP,
        "the leaderboard's top 10 as of a random LSN through the <view>_as_of macro (its "
        "QUALIFY row_number() over each row key's changes up to the LSN: it reads the rows "
        "at or before the LSN, so its cost grows with the LSN's place in the history)",
        "random",
    ),
    "top10_as_of_last_lsn": (
        Q_ASOF_TOP,
        "the same as of the last LSN of the history: every row",
        "last",
    ),
}


def baseline_copy(rev: str) -> Any:
    """history/duckdb_copy.py as it was at git revision `rev`, loaded as a module of its own
    (its imports resolve to today's modules), so that the same run measures the sync before
    and after a change on the same store."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:history/duckdb_copy.py"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("viewstore.history._baseline_duckdb_copy")
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{rev}:history/duckdb_copy.py", "exec"), module.__dict__)
    return module


def baseline_sync(module: Any, data: Path, copy_dir: Path) -> Any:
    """The baseline module's sync of the store in `data` into a copy in `copy_dir`."""
    with Store.open(data, readonly=True) as store:
        views = {n: i for n, i in stored_views(store).items() if i.state == "ready"}
        return module.sync_store(store, views, copy_dir)


def duckdb_sync_and_queries(data: Path, hist: History, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = baseline_copy(args.baseline_rev) if args.baseline_rev else None
    base_dir = data.parent / "baseline_copy"
    if base is not None:
        base_dir.mkdir(exist_ok=True)
        before = baseline_sync(base, data, base_dir)
        out["baseline"] = {
            "rev": args.baseline_rev,
            "full_sync": {
                "rows": before.rows,
                "seconds": round(before.seconds, 2),
                "rows_per_s": round(before.rows / before.seconds),
            },
        }
        log(f"baseline ({args.baseline_rev}) DuckDB sync from scratch: {out['baseline']}")
    full = historycopy.sync(data)
    if full.rows != hist.entries:
        raise SystemExit(f"sync copied {full.rows} rows, expected {hist.entries}")
    out["full_sync"] = {
        "rows": full.rows,
        "seconds": round(full.seconds, 2),
        "rows_per_s": round(full.rows / full.seconds),
        "duckdb_file_bytes": duckdb_copy.copy_path(data).stat().st_size,
    }
    log(f"DuckDB sync from scratch: {out['full_sync']}")

    rng = random.Random(13)
    con = historycopy.connect(data, sync_first=False)
    try:
        out["duckdb"] = {
            "version": con.execute("SELECT version()").fetchone()[0],
            "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
            "memory_limit": con.execute("SELECT current_setting('memory_limit')").fetchone()[0],
        }
        table_rows = con.execute(f"SELECT count(*) FROM {VIEW_NAME}").fetchone()[0]
        queries: dict[str, Any] = {}
        answers = {}
        lsns = {"random": rng.randint(int(History.BUILT_AT), hist.last_lsn), "last": hist.last_lsn}
        for name, (text, what, lsn_kind) in QUERIES.items():
            params = [lsns[lsn_kind]] if lsn_kind else []
            times = []
            for _ in range(3):
                t = time.perf_counter()
                result = con.execute(text, params).fetchall()
                times.append(time.perf_counter() - t)
            answers[name] = result
            queries[name] = {
                "what": what,
                "sql": text,
                "rows_scanned": table_rows,
                "seconds": [round(x, 3) for x in times],
                "median_s": round(statistics.median(times), 3),
                "answer": [[str(v) for v in r] for r in result[:3]],
            }
            if lsn_kind:
                queries[name]["lsn"] = str(Lsn(lsns[lsn_kind]))
            log(f"{name}: {queries[name]['median_s']} s (median of 3)")
        if answers["biggest_climb_by_lag"] != answers["biggest_climb_from_before_column"]:
            raise SystemExit("lag() and before_total_score disagree on the biggest climbs")
        with Store.open(data, readonly=True) as store:
            for kind, lsn in lsns.items():
                rows = rows_as_of(store, History.VIEW_ID, lsn).values()
                want = sorted(rows, key=lambda r: (-r[2], r[0]))[:10]
                if [r[0] for r in answers[f"top10_as_of_{kind}_lsn"]] != [r[0] for r in want]:
                    raise SystemExit(f"as of {Lsn(lsn)}: DuckDB's top 10 differs from rows_as_of's")
        out["queries"] = queries
    finally:
        con.close()

    t = time.perf_counter()
    noop = historycopy.sync(data)
    out["noop_sync_ms"] = round((time.perf_counter() - t) * 1000, 1)
    assert noop.rows == 0

    # Several incremental syncs in a row: one alone measures DuckDB's luck as much as the sync
    # (the checkpoint when the copy closes now and then merges the table's partly filled row
    # groups: 0.2 s for 100k changes, 0.5 s the time it merges).
    rounds = -(-args.add_entries // hist.keys)
    runs: dict[str, list[float]] = {"new": [], "baseline": []}
    write_s = []
    for _ in range(args.incremental_syncs):
        write_s.append(hist.write(data, rounds, limit=args.add_entries))
        if base is not None:
            runs["baseline"].append(baseline_sync(base, data, base_dir).seconds)
        inc = historycopy.sync(data)
        if inc.rows != args.add_entries:
            raise SystemExit(f"incremental sync copied {inc.rows} rows, not {args.add_entries}")
        runs["new"].append(inc.seconds)

    def summary(seconds: list[float]) -> dict[str, Any]:
        median = statistics.median(seconds)
        return {
            "rows": args.add_entries,
            "syncs": len(seconds),
            "seconds": [round(x, 3) for x in seconds],
            "median_s": round(median, 3),
            "rows_per_s": round(args.add_entries / median),
            "rows_per_s_all_syncs": round(args.add_entries * len(seconds) / sum(seconds)),
        }

    if base is not None:
        out["baseline"]["incremental_sync"] = summary(runs["baseline"])
        log(f"baseline DuckDB incremental sync: {out['baseline']['incremental_sync']}")
    out["incremental_sync"] = {
        **summary(runs["new"]),
        "table_rows_after": table_rows + args.add_entries * args.incremental_syncs,
        "entries_written_in_s": [round(x, 2) for x in write_s],
    }
    log(f"DuckDB incremental sync: {out['incremental_sync']}")
    return out


def checkpoint_write(work: Path, hist: History) -> dict[str, Any]:
    """What writing one checkpoint of a `hist.keys`-row view costs the applier: its rows read
    from the views column family as it reads them (Applier._put_checkpoints: a scan of the
    view's output rows, checkpoint.put into the group's batch), and the synced write of that
    batch; median of 3, on a store that holds the view's rows and nothing else."""
    data = work / "checkpoint_write"
    prefix = view_prefix(History.VIEW_ID) + b"r"
    with Store.open(data) as store:
        batch = store.new_batch()
        for k in range(hist.keys):
            row = pack_fields(hist.row(k, hist.cents[k]))
            batch.put(prefix + hist.okeys[k], row, store.cf["views"])
        store.write(batch, sync=True)
        store.views.flush(True)
        build, write, sizes = [], [], []
        for i in range(3):
            t = time.perf_counter()
            batch = store.new_batch()
            rows = ((k[len(prefix) :], v) for k, v in scan(store.views, prefix))
            checkpoint.put(batch, store.cf["history"], History.VIEW_ID, 1000 + i, rows)
            t2 = time.perf_counter()
            sizes.append(batch.size_in_bytes())
            store.write(batch, sync=True)
            build.append(t2 - t)
            write.append(time.perf_counter() - t2)
    out = {
        "rows": hist.keys,
        "scan_and_put_ms": round(statistics.median(build) * 1000, 1),
        "synced_write_ms": round(statistics.median(write) * 1000, 1),
        "batch_bytes": sizes[0],
    }
    log(f"one checkpoint of {hist.keys:,} rows: {out}")
    return out


def iceberg_export(data: Path, hist: History, args: argparse.Namespace) -> dict[str, Any]:
    """The Iceberg export of the synthetic history: from scratch, nothing new, incremental."""
    from pyiceberg.expressions import And, GreaterThan, LessThanOrEqual

    warehouse = data.parent / "warehouse"
    target = lakeexport.target(data, str(warehouse))
    out: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}

    def timed() -> tuple[Any, float]:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        done = lakeexport.export(data, target)
        after = resource.getrusage(resource.RUSAGE_SELF)
        return done, (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)

    full, cpu = timed()
    if full.rows != hist.entries:
        raise SystemExit(f"export wrote {full.rows} rows, expected {hist.entries}")
    table = target.catalog().load_table(("viewstore", VIEW_NAME))
    files = list(table.scan().plan_files())
    out["full_export"] = {
        "rows": full.rows,
        "seconds": round(full.seconds, 2),
        "rows_per_s": round(full.rows / full.seconds),
        "process_cpu_s": round(cpu, 2),
        "commits": full.commits[VIEW_NAME],
        "parquet_files": len(files),
        "parquet_bytes": sum(f.file.file_size_in_bytes for f in files),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    log(f"Iceberg export from scratch: {out['full_export']}")
    noop, _ = timed()
    assert noop.rows == 0
    out["noop_export_ms"] = round(noop.seconds * 1000, 1)

    low = int(History.BUILT_AT) + (hist.last_lsn - int(History.BUILT_AT)) // 2
    middle = And(GreaterThan("lsn", low), LessThanOrEqual("lsn", low + 0x10000))
    planned = len(list(table.scan(row_filter=middle).plan_files()))
    out["lsn_range_scan_files"] = [planned, len(files)]

    rounds = -(-args.add_entries // hist.keys)
    hist.write(data, rounds, limit=args.add_entries)
    inc, cpu = timed()
    if inc.rows != args.add_entries:
        raise SystemExit(f"incremental export wrote {inc.rows} rows, not {args.add_entries}")
    out["incremental_export"] = {
        "rows": inc.rows,
        "seconds": round(inc.seconds, 3),
        "rows_per_s": round(inc.rows / inc.seconds),
        "process_cpu_s": round(cpu, 2),
        "commits": inc.commits[VIEW_NAME],
    }
    total = len(table.refresh().scan(selected_fields=("lsn",)).to_arrow())
    if total != hist.entries:
        raise SystemExit(f"the table holds {total} rows, the history {hist.entries}")
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    log(f"Iceberg export incrementally: {out['incremental_export']}")
    return out


def synthetic(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    data = work / "synthetic"
    hist = History(args.keys, args.versions, args.checkpoint_interval)
    total = args.keys * args.versions
    log(f"writing {total:,} history entries with changelog.entries (not ingested)")
    seconds = hist.write(data, args.versions)
    with Store.open(data, readonly=True) as store:
        levels = store.history.property_value("rocksdb.levelstats")
        sst = store.history.property_int_value("rocksdb.total-sst-files-size")
    out: dict[str, Any] = {
        "how": (
            "NOT ingested: written directly into a fresh store with the changelog's own writer "
            "(history.changelog.entries, as the applier calls it), rows packed with "
            "codecs.value.pack_fields; a ViewInfo (state ready) and an applied LSN make it a view "
            "the readers and the DuckDB copy accept. One change per transaction."
        ),
        "keys": args.keys,
        "versions_per_key": args.versions,
        "entries": total,
        "rocksdb_keys": 2 * total,
        "lsn_range": [str(History.BUILT_AT), str(Lsn(hist.last_lsn))],
        "write_seconds": round(seconds, 1),
        "write_entries_per_s": round(total / seconds),
        "history_sst_bytes": sst,
        "data_dir_bytes": dir_bytes(data),
        "history_levelstats": levels.splitlines(),
        "checkpoint_interval": hist.checkpoint_every,
        "checkpoints": len(hist.checkpoints),
        "checkpoint_rows_bytes": hist.checkpoint_bytes,
    }
    log(f"written in {seconds:.1f} s ({out['write_entries_per_s']:,} entries/s)")
    if args.part == "export":
        out["iceberg"] = iceberg_export(data, hist, args)
        return out
    out["checkpoint_write"] = checkpoint_write(work, hist)
    if args.part != "sync":
        out["as_of"] = as_of_reads(data, hist, args)
    out.update(duckdb_sync_and_queries(data, hist, args))
    if args.part == "all":
        out["iceberg"] = iceberg_export(data, hist, args)
    return out


# -- main ----------------------------------------------------------------------------------


def print_table(result: dict[str, Any]) -> None:
    print()
    ing = result.get("ingest")
    if ing:
        wl = ing["workload"]
        print(
            f"1. history write overhead: {wl['score_rows']:,} score rows in "
            f"{wl['transactions']:,} txns, the seed view, caught up from the WAL"
        )
        print(
            f"   {'store':<16}{'seconds':>9}{'rows/s':>10}{'µs/txn':>9}{'CPU µs/txn':>12}"
            f"{'history entries':>17}"
        )
        for r in ing["runs"]:
            print(
                f"   {r['store']:<16}{r['seconds']:>9.2f}{r['rows_per_s']:>10,}"
                f"{r['us_per_txn']:>9}{r['cpu_us_per_txn']:>12}{r['entries_after_build']:>17,}"
            )
        w, wo = ing["with_history"], ing["without_history"]
        print(
            f"   medians: with history {w['rows_per_s']:,} rows/s ({w['us_per_txn']} µs/txn), "
            f"without {wo['rows_per_s']:,} rows/s ({wo['us_per_txn']} µs/txn): ratio "
            f"{ing['rows_per_s_ratio_with_to_without']}; {ing['us_per_history_entry']} µs "
            f"({ing['cpu_us_per_history_entry']} µs CPU) per history entry"
        )
        print(
            f"   measured inside the stores: building and batching the history entries "
            f"{ing['history_python_cpu_us_per_entry']} µs CPU per entry = "
            f"{ing['history_python_cpu_us_per_txn']} µs/txn "
            f"({ing['history_python_cpu_percent']}% of the store's CPU); synced group writes "
            f"{w['group_writes_us_per_txn']} µs/txn with history, "
            f"{wo['group_writes_us_per_txn']} without"
        )
    syn = result.get("synthetic")
    if syn and "as_of" in syn:
        print(
            f"\n2. as-of reads at {syn['entries']:,} history entries ({syn['keys']:,} rows x "
            f"{syn['versions_per_key']} versions), written by changelog.entries, not ingested"
        )
        print(f"   {'read (wall time; CPU time of the thread)':<48}{'n':>7}{'p50':>10}{'p99':>10}")
        a = syn["as_of"]
        for label, key in (
            ("row_as_of, open store", "row_as_of"),
            ("  CPU", "row_as_of_thread_cpu"),
            ("query_rows(where, as_of), open store", "query_rows_open_store"),
            ("  CPU", "query_rows_open_store_thread_cpu"),
            ("viewstore.open(dir).query(where, as_of)", "api_query_point"),
        ):
            p = a[key]
            print(f"   {label:<48}{p['n']:>7,}{p['p50_us']:>8.1f}µs{p['p99_us']:>8.1f}µs")
        print(f"   (the lookup loop had {a['lookup_loop_cpu_share']:.0%} of a core)")
        w = a["rows_as_of_whole_view"]
        print(
            f"   rows_as_of, whole view ({w['rows']:,} rows): {w['median_ms']:,} ms (median of 5; "
            f"CPU {w['thread_cpu_median_ms']:,} ms); "
            f"through the API: {a['api_query_whole_view_ms']:,} ms; by one seek per row key "
            f"(no checkpoints): {a['rows_by_seeks_whole_view_ms']:,} ms "
            f"(CPU {a['rows_by_seeks_whole_view_thread_cpu_ms']:,} ms)"
        )
        cw = syn["checkpoint_write"]
        print(
            f"   checkpoints: {syn['checkpoints']} (one per {syn['checkpoint_interval']:,} "
            f"changes), {syn['checkpoint_rows_bytes'] / 1e6:.1f} MB of rows; writing one of "
            f"{cw['rows']:,} rows: {cw['scan_and_put_ms']} ms into the batch, "
            f"{cw['synced_write_ms']} ms synced write"
        )
    if syn and "full_sync" in syn:
        f, i = syn["full_sync"], syn["incremental_sync"]
        b = syn.get("baseline")
        if b:
            print(
                f"\n3. baseline ({b['rev']}): {b['full_sync']['rows_per_s']:,} rows/s from "
                f"scratch, incrementally median {b['incremental_sync']['rows_per_s']:,} rows/s, "
                f"all of them {b['incremental_sync']['rows_per_s_all_syncs']:,}"
            )
        print(
            f"\n3. DuckDB sync: {f['rows']:,} rows from scratch in {f['seconds']} s = "
            f"{f['rows_per_s']:,} rows/s; {i['syncs']} x {i['rows']:,} incrementally in "
            f"{i['seconds']} s: median {i['rows_per_s']:,} rows/s, all of them "
            f"{i['rows_per_s_all_syncs']:,} rows/s; nothing new: {syn['noop_sync_ms']} ms"
        )
        print(f"\n4. DuckDB queries over {f['rows']:,} rows (median of 3)")
        for name, q in syn["queries"].items():
            print(f"   {name:<40}{q['median_s']:>8.2f} s")
    ice = (syn or {}).get("iceberg")
    if ice:
        f, i = ice["full_export"], ice["incremental_export"]
        print(
            f"\n5. Iceberg export: {f['rows']:,} rows from scratch in {f['seconds']} s = "
            f"{f['rows_per_s']:,} rows/s ({f['commits']} commits, {f['parquet_files']} files, "
            f"{f['parquet_bytes'] / 1e6:,.0f} MB); +{i['rows']:,} incrementally in "
            f"{i['seconds']} s = {i['rows_per_s']:,} rows/s; nothing new: "
            f"{ice['noop_export_ms']} ms; an LSN range plans {ice['lsn_range_scan_files'][0]} of "
            f"{ice['lsn_range_scan_files'][1]} files; load average {f['load_average_after']}"
        )
    print(f"\nresults: {result['out']}")


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds: Postgres and files go


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke test: small sizes throughout")
    ap.add_argument("--out", type=Path, help="default bench/results/history.json")
    ap.add_argument(
        "--part",
        choices=["all", "ingest", "history", "sync", "export"],
        default="all",
        help="sync: the synthetic history and its DuckDB copy only (no as-of reads); "
        "export: the synthetic history and its Iceberg export only",
    )
    ap.add_argument(
        "--baseline-rev",
        help="also sync with history/duckdb_copy.py as of this git revision, in the same run",
    )
    ap.add_argument("--players", type=int, default=1_000)
    ap.add_argument("--initial-scores", type=int, default=10_000)
    ap.add_argument("--single-txns", type=int, default=50_000)
    ap.add_argument("--multi-txns", type=int, default=500)
    ap.add_argument("--multi-rows", type=int, default=100)
    ap.add_argument("--rounds", type=int, help="pairs of stores, with and without (default 4)")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--lookups", type=int, default=20_000)
    ap.add_argument("--api-calls", type=int, default=300)
    ap.add_argument("--add-entries", type=int, default=100_000)
    ap.add_argument(
        "--incremental-syncs", type=int, default=5, help="incremental syncs of --add-entries each"
    )
    ap.add_argument(
        "--checkpoint-interval",
        type=int,
        default=10_000,
        help="a checkpoint after max(this, --keys) changes, as `run` writes them; 0: none",
    )
    args = ap.parse_args()
    if args.quick:
        args.initial_scores, args.single_txns, args.multi_txns = 1_000, 2_000, 10
        args.keys, args.versions = 2_000, 100
        args.lookups, args.api_calls, args.add_entries = 10_000, 100, 10_000
        args.rounds = args.rounds or 1
    args.rounds = args.rounds or 4
    args.out = args.out or RESULTS / ("history_quick.json" if args.quick else "history.json")
    return args


def bench(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {
        "benchmark": "history",
        "command_line": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source_state(),
        "nice": os.nice(0),
    }
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        work = Path(tmp)
        with ThrowawayPostgres(settings=PG_SETTINGS) as pg:
            result["machine"] = machine_info(pg)
            result["postgres_settings"] = pg.settings
            if args.part in ("all", "ingest"):
                result["ingest"] = ingest_overhead(pg, work, args)
        if args.part in ("all", "history", "sync", "export"):
            result["synthetic"] = synthetic(work, args)
    if "ingest" in result and "synthetic" in result:
        engine = result["ingest"]["engine_view_info"]
        mine = History(1, 1).view_info().model_dump(include=set(engine))
        result["synthetic"]["catalog_matches_engine"] = mine == engine
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["duration_s"] = round(time.monotonic() - began, 1)
    result["out"] = str(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


def main() -> None:
    if sys.argv[1:2] == ["_store"]:
        run_store(sys.argv[2:])
        return
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        bench(args)
    finally:
        for proc in CHILDREN:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
