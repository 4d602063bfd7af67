#!/usr/bin/env python3
"""Ingest benchmark: `viewstore run` against `pg_recvlogical` on the same WAL.

Workload. A throwaway Postgres holds `players` (1,000 rows) and `player_scores` (bigserial key,
player id, score, timestamp), both in one publication. viewstore is started once on it to take
its snapshot (its slot is created then), stopped, and a second slot is created for the
reference; only then is the load written, with both consumers stopped: `--rows` inserts into
`player_scores` in transactions of `--txn-size` rows (default 1,000,000 in 1,000-row
transactions), or with `--big-txn ROWS` all of them in one transaction. Both slots therefore
decode the same WAL, in catch-up mode, one consumer at a time.

Reference. `pg_recvlogical --start` on the second slot, pgoutput proto_version 1 (what viewstore
asks for), output to /dev/null, `--endpos` the WAL insert position after the load: the
walsender's decode-and-send rate with a receiver that does no work: about as fast as any
pgoutput consumer can go on this machine (not a hard ceiling: a slower receiver lets the
walsender send in larger writes, and it then spends less CPU per row).

viewstore. `viewstore run` on its slot, timed from process start until its store has durably
applied the target LSN, then stopped with SIGTERM; the store is then checked (status API) to
hold the target LSN and every row. Progress is polled every 50 ms from the slot's
confirmed_flush_lsn, which viewstore moves only to what it has synced (`--poll status` polls the
status API instead, as `viewstore status --json` would, but each poll opens RocksDB read-only
and replays its WAL: on 2 cores that took most of a core away from the run). Also reported: the
time from its "streaming from slot" log line, which leaves out the fixed start-up cost
(interpreter, imports, preflight), and its peak RSS (VmHWM, and wait4's ru_maxrss).

Ratio. viewstore rows/s divided by reference rows/s, rows being the rows inserted: 1.0 would
mean viewstore applies as fast as Postgres can decode. CPU seconds of each consumer, of the
Postgres cluster, and of everything else on the machine are recorded for each phase: on 2 cores
the consumer and the walsender compete, and a high "other" figure means the run was disturbed.

The cluster is ThrowawayPostgres (fsync off) with autovacuum off, so no vacuum of the freshly
loaded table competes with the consumers; viewstore's RocksDB writes are synced as in production.
Everything started is stopped and both slots are dropped on exit, Ctrl-C and SIGTERM included.

    scripts/bench_ingest.py                    # 1M rows, 1,000-row txns: bench/results/ingest.json
    scripts/bench_ingest.py --big-txn 5000000  # one 5M-row txn: bench/results/ingest_big_txn.json
    scripts/bench_ingest.py --quick            # 50k rows, a smoke test
    scripts/bench_ingest.py --views            # the same, keeping the seed view too
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from bench_common import (
    PG_SETTINGS,
    POLL,
    TIMELINE_EVERY,
    BenchError,
    Child,
    CpuMeter,
    machine_info,
    query_lsn,
    redacted,
    source_state,
)
from psycopg import sql

from viewstore.demo import VIEW_SQL
from viewstore.errors import StoreError, ViewstoreError
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.status import read_status

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
QUICK_ROWS = 50_000
PLAYERS = 1_000

SCHEMA = """
CREATE TABLE players (id int PRIMARY KEY, name text);
CREATE TABLE player_scores (
    id bigserial PRIMARY KEY,
    player_id int REFERENCES players (id),
    score int,
    created_at timestamptz DEFAULT now()
);
"""
INSERT_PLAYERS = "INSERT INTO players SELECT g, 'player ' || g FROM generate_series(1, %s) AS g"
# Player ids 1..1000 (PLAYERS), each once in every 1,000 consecutive rows.
INSERT_SCORES = """
INSERT INTO player_scores (player_id, score)
SELECT (1 + g %% 1000)::int, ((g * 7919) %% 100000)::int
FROM generate_series(%s::bigint, %s::bigint) AS g
"""


# -- the benchmark -------------------------------------------------------------------------


@dataclass
class Workload:
    rows: int
    txn_size: int

    @property
    def transactions(self) -> int:
        return -(-self.rows // self.txn_size)

    def describe(self) -> str:
        if self.transactions == 1:
            return f"{self.rows:,} rows in one transaction"
        return f"{self.rows:,} rows in {self.transactions:,} txns of {self.txn_size:,}"


@dataclass
class Bench:
    args: argparse.Namespace
    workload: Workload
    pg: ThrowawayPostgres
    work: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    children: list[Child] = field(default_factory=list)

    @property
    def publication(self) -> str:
        return f"bench_pub_{self.suffix}"

    @property
    def slot(self) -> str:
        return f"bench_vs_{self.suffix}"

    @property
    def ref_slot(self) -> str:
        return f"bench_ref_{self.suffix}"

    @property
    def ref_after_slot(self) -> str:
        # A second reference, drained after viewstore: shows whether running first or second
        # (cold or warm caches, snapshot files already written) favours either consumer.
        return f"bench_ref2_{self.suffix}"

    @property
    def data_dir(self) -> Path:
        return self.work / "store"

    def postmaster(self) -> int:
        return int((self.pg.data_dir / "postmaster.pid").read_text().splitlines()[0])

    def connect(self, autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.dsn, autocommit=autocommit)

    def start(self, argv: list[str], log_name: str) -> Child:
        child = Child(argv, self.work / log_name)
        self.children.append(child)
        return child

    def viewstore_argv(self) -> list[str]:
        # The interpreter itself rather than the `viewstore` script: no shim in the timing.
        argv = [
            sys.executable, "-m", "viewstore.cli", "run",
            "--dsn", self.pg.dsn, "--data", str(self.data_dir),
            "--publication", self.publication, "--slot", self.slot,
        ]  # fmt: skip
        if self.args.views:
            views = self.work / "views.sql"
            views.write_text(VIEW_SQL)  # the seed's leaderboard view, verbatim
            argv += ["--views", str(views)]
        return argv

    def reference_argv(self, target: Lsn, slot: str) -> list[str]:
        return [
            str(self.pg.bindir / "pg_recvlogical"), "--start", "-S", slot,
            "-d", self.pg.dsn, "--plugin", "pgoutput",
            "-o", "proto_version=1", "-o", f"publication_names={self.publication}",
            "-f", "/dev/null", "--endpos", str(target), "--no-loop",
        ]  # fmt: skip

    # -- set-up

    def seed(self) -> None:
        with self.connect() as conn:
            conn.execute(SCHEMA)
            conn.execute(INSERT_PLAYERS, (PLAYERS,))
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE players, player_scores").format(
                    sql.Identifier(self.publication)
                )
            )

    def snapshot(self) -> float:
        """First start of viewstore: it creates its slot and copies the seed; then stop it."""
        child = self.start(self.viewstore_argv(), "viewstore-snapshot.log")
        deadline = time.monotonic() + 120
        while _status(self.data_dir, "snapshot") != "complete":
            if child.poll() or time.monotonic() > deadline:
                child.kill()
                raise BenchError(
                    f"viewstore did not finish its snapshot (exit {child.exit_code}):\n"
                    + child.log_tail()
                )
            time.sleep(POLL)
        child.signal(signal.SIGTERM)
        code = child.wait(60)
        if code != 0:
            raise BenchError(f"viewstore run exited with {code} on SIGTERM:\n{child.log_tail()}")
        return time.monotonic() - child.started

    def load(self) -> dict[str, Any]:
        """Write the workload with both consumers stopped; returns where it ends in the WAL."""
        with self.connect() as conn:
            for slot in (self.ref_slot, self.ref_after_slot):
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        w = self.workload
        with self.connect(autocommit=False) as conn:
            start = query_lsn(conn, "SELECT pg_current_wal_insert_lsn()::text")
            conn.commit()
            began = time.monotonic()
            for first in range(1, w.rows + 1, w.txn_size):
                conn.execute(INSERT_SCORES, (first, min(first + w.txn_size, w.rows + 1) - 1))
                conn.commit()
            seconds = time.monotonic() - began
            # The insert position, not pg_current_wal_lsn(): with synchronous_commit=off the
            # last commit may not be written yet.
            target = query_lsn(conn, "SELECT pg_current_wal_insert_lsn()::text")
            block, segment = conn.execute(
                "SELECT current_setting('wal_block_size')::int,"
                " pg_size_bytes(current_setting('wal_segment_size'))"
            ).fetchone() or (8192, 16 << 20)
            conn.commit()
        # If the last record ended exactly at a page boundary the insert position points past
        # the next page's header, which no consumer is ever shown until more WAL is written.
        if target % segment == 40:
            target = Lsn(target - 40)
        elif target % block == 24:
            target = Lsn(target - 24)
        return {
            "start_lsn": str(start),
            "target_lsn": str(target),
            "wal_bytes": int(target - start),
            "load_seconds": round(seconds, 3),
            "target": target,
        }

    # -- the two consumers

    def run_reference(self, target: Lsn, slot: str) -> dict[str, Any]:
        meter = CpuMeter(self.postmaster(), connections=0)
        meter.begin()
        child = self.start(self.reference_argv(target, slot), f"pg_recvlogical-{slot}.log")
        try:
            code = child.wait(self.args.timeout)
        except BenchError:
            child.kill()
            raise BenchError(
                f"pg_recvlogical did not reach {target} within {self.args.timeout:.0f}s",
                hint="raise --timeout",
            ) from None
        assert child.ended is not None
        seconds = child.ended - child.started
        if code != 0:
            raise BenchError(f"pg_recvlogical exited with {code}:\n{child.log_tail()}")
        return {
            "command": redacted(child.argv),
            "seconds": round(seconds, 3),
            "rows_per_s": round(self.workload.rows / seconds),
            "peak_rss_kib": child.max_rss_kib,
            "cpu": meter.end(seconds, child.cpu_seconds()),
        }

    def applied(self, conn: psycopg.Connection[Any]) -> Lsn | None:
        """How far viewstore has durably applied, found the `--poll` way (None: not known yet).

        `slot`: the slot's confirmed_flush_lsn. viewstore acknowledges only what its store has
        synced, and sends the acknowledgement right after the synced write, so this is the
        store's applied LSN at the cost of one query. `status`: the status API itself (what
        `viewstore status --json` prints); it opens RocksDB read-only, which replays the
        store's unflushed WAL, and that costs up to a core on this machine.
        """
        if self.args.poll == "status":
            try:
                return Lsn.parse(read_status(self.data_dir).applied_lsn)
            except StoreError:
                return None  # a read-only open can race a flush; the next poll retries
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        ).fetchone()
        return Lsn.parse(row[0]) if row and row[0] else None

    def run_viewstore(self, start: Lsn, target: Lsn) -> dict[str, Any]:
        with self.connect() as conn:
            return self._run_viewstore(conn, start, target)

    def _run_viewstore(
        self, conn: psycopg.Connection[Any], start: Lsn, target: Lsn
    ) -> dict[str, Any]:
        code_state = source_state()
        meter = CpuMeter(self.postmaster(), connections=1)  # `conn`, the poller's
        meter.begin()
        child = self.start(self.viewstore_argv(), "viewstore-run.log")
        profiler = self.start_profiler(child) if self.args.profile else None
        limit_kib = int(self.args.max_rss_gib * 1024 * 1024)
        timeline: list[dict[str, Any]] = []
        polls = 0
        applied = start
        next_sample = child.started
        while True:
            now = time.monotonic()
            if child.poll():
                raise BenchError(
                    f"viewstore run exited with {child.exit_code} before applying {target}:\n"
                    + child.log_tail()
                )
            rss = child.proc_status_kib("VmRSS") or 0
            if now >= next_sample:
                timeline.append(
                    {
                        "t": round(now - child.started, 2),
                        "rss_mib": round(rss / 1024, 1),
                        "cpu_s": round(child.cpu_seconds(), 2),
                        "applied": round(max(applied - start, 0) / (target - start), 4),
                    }
                )
                next_sample += TIMELINE_EVERY
            aborted = None
            if rss > limit_kib:
                aborted = (
                    f"RSS {rss / 1048576:.1f} GiB over --max-rss-gib {self.args.max_rss_gib:g}"
                )
            elif now - child.started > self.args.timeout:
                aborted = f"not caught up after --timeout {self.args.timeout:.0f}s"
            if aborted:
                hwm = child.proc_status_kib("VmHWM")
                child.kill()
                raise BenchError(
                    f"viewstore run stopped: {aborted}",
                    partial={
                        "aborted": aborted,
                        "vm_hwm_kib": hwm,
                        "applied_lsn": str(applied),
                        "elapsed_s": round(now - child.started, 1),
                        "cpu_s": round(child.cpu_seconds(), 2),
                        "timeline": timeline,
                    },
                )
            polls += 1
            applied = self.applied(conn) or applied
            if applied >= target:
                caught_up, caught_up_wall = time.monotonic(), time.time()
                break
            time.sleep(max(0.0, POLL - (time.monotonic() - now)))
        hwm = child.proc_status_kib("VmHWM")
        child.signal(signal.SIGTERM)
        code = child.wait(120)
        if code != 0:
            raise BenchError(f"viewstore run exited with {code} on SIGTERM:\n{child.log_tail()}")
        final = self.check_store(target)
        profile = self.finish_profiler(profiler) if profiler else None
        seconds = caught_up - child.started
        streaming_from = _log_time(child.log, "streaming from slot")
        streaming = None if streaming_from is None else caught_up_wall - streaming_from
        w = self.workload
        result: dict[str, Any] = {
            "command": redacted(child.argv),
            "code": code_state,
            "seconds": round(seconds, 3),
            "rows_per_s": round(w.rows / seconds),
            "startup_seconds": None if streaming is None else round(seconds - streaming, 3),
            "streaming_seconds": None if streaming is None else round(streaming, 3),
            "streaming_rows_per_s": None if not streaming else round(w.rows / streaming),
            "vm_hwm_kib": hwm,
            "max_rss_kib": child.max_rss_kib,
            "peak_rss_kib": max(hwm or 0, child.max_rss_kib or 0),
            "cpu": meter.end(
                seconds, child.cpu_seconds(), profiler.cpu_seconds() if profiler else 0
            ),
            "poll": self.args.poll,
            "polls": polls,
            "status_after_stop": final,
            "timeline": timeline,
        }
        if profiler is not None:
            result["profiled"] = True  # py-spy samples it: timings are a little pessimistic
            result["profile"] = profile
        return result

    def check_store(self, target: Lsn) -> dict[str, Any]:
        """After the run: the store must hold the target LSN and every row of the load."""
        report = read_status(self.data_dir)
        rows = {t.name: t.rows for t in report.tables}
        want = {"public.players": PLAYERS, "public.player_scores": self.workload.rows}
        if Lsn.parse(report.applied_lsn) < target or rows != want:
            raise BenchError(
                f"viewstore's store is not what the load wrote: applied {report.applied_lsn} "
                f"(target {target}), rows {rows} (expected {want})"
            )
        return {
            "applied_lsn": report.applied_lsn,
            "transactions": report.transactions,
            "row_changes": report.rows,
            "tables": rows,
        }

    # -- profiling

    def start_profiler(self, child: Child) -> Child | None:
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            print("profile: py-spy not found (pip install py-spy); running without it")
            return None
        fmt = self.args.profile_format
        out = self.profile_path(fmt)
        out.parent.mkdir(parents=True, exist_ok=True)
        return self.start(
            [py_spy, "record", "--pid", str(child.pid), "--rate", "100", "--format", fmt,
             "--output", str(out)],
            "py-spy.log",
        )  # fmt: skip

    def finish_profiler(self, profiler: Child) -> str | None:
        try:
            code = profiler.wait(60)
        except BenchError:
            profiler.kill()
            code = -1
        out = Path(profiler.argv[profiler.argv.index("--output") + 1])
        if code != 0 or not out.exists():
            print(f"profile: py-spy could not profile viewstore (exit {code}); skipped")
            print(profiler.log_tail(5), end="")
            return None
        print(f"profile: {out}")
        return str(out)

    def profile_path(self, fmt: str) -> Path:
        out: Path = self.args.out
        ext = ".svg" if fmt == "flamegraph" else f".{fmt}.json"
        return out.with_name(out.stem + ".viewstore" + ext)

    # -- clean-up

    def cleanup(self) -> list[str]:
        """Kill what is still running and drop both slots; returns the slots left behind."""
        for child in self.children:
            with contextlib.suppress(Exception):
                child.kill()
        slots = [self.slot, self.ref_slot, self.ref_after_slot]
        if not self.pg.running:
            return []
        with contextlib.suppress(psycopg.Error), self.connect() as conn:
            deadline = time.monotonic() + 10
            while True:  # a walsender outlives its client for a moment
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = ANY(%s) AND active_pid IS NULL",
                    (slots,),
                )
                left = conn.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY(%s)",
                    (slots,),
                ).fetchall()
                if not left or time.monotonic() > deadline:
                    return [name for (name,) in left]
                time.sleep(0.1)
        return slots


def _status(data_dir: Path, field_name: str) -> Any:
    try:
        return getattr(read_status(data_dir), field_name)
    except StoreError:
        return None


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def _log_time(log: Path, needle: str) -> float | None:
    """Unix time of the first line of a viewstore log that contains `needle`."""
    for line in log.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if match and needle in line:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S")  # local time, as logged
            return stamp.timestamp() + int(match[2]) / 1000
    return None


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="See the module docstring (head -40 scripts/bench_ingest.py) for the method.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_ROWS:,} rows")
    mode.add_argument(
        "--big-txn",
        type=int,
        metavar="ROWS",
        help="insert ROWS rows in one transaction instead (e.g. 5000000)",
    )
    parser.add_argument("--rows", type=int, help="rows to insert (default 1,000,000)")
    parser.add_argument(
        "--views",
        action="store_true",
        help="viewstore also keeps the seed's leaderboard view (viewstore/demo.py VIEW_SQL)",
    )
    parser.add_argument("--txn-size", type=int, default=1000, help="rows per transaction")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON results (default bench/results/ingest.json; ingest_big_txn.json with "
        "--big-txn, ingest_quick.json with --quick)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds each consumer may take (default 900)"
    )
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        default=8.0,
        help="stop viewstore if its RSS passes this (default 8)",
    )
    parser.add_argument(
        "--poll",
        choices=["slot", "status"],
        default="slot",
        help="how to see that viewstore has caught up: its slot's confirmed_flush_lsn (default, "
        "one query) or the status API (opens RocksDB read-only every 50 ms: costs CPU)",
    )
    parser.add_argument("--profile", action="store_true", help="run viewstore under py-spy")
    parser.add_argument(
        "--profile-format", choices=["speedscope", "flamegraph", "raw"], default="speedscope"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if args.big_txn is not None and args.rows is not None:
        parser.error("--rows and --big-txn both give the row count; use one")
    for name in ("big_txn", "rows", "txn_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.out is None:
        stem = "ingest_big_txn" if args.big_txn else "ingest_quick" if args.quick else "ingest"
        args.out = RESULTS / f"{stem}{'_views' if args.views else ''}.json"
    return args


def workload_of(args: argparse.Namespace) -> Workload:
    if args.big_txn:
        return Workload(args.big_txn, args.big_txn)
    return Workload(args.rows or (QUICK_ROWS if args.quick else 1_000_000), args.txn_size)


def print_table(result: dict[str, Any]) -> None:
    ref, vs = result["reference"], result["viewstore"]
    print()
    head = ("workload", "reference rows/s", "viewstore rows/s", "ratio", "peak RSS")
    print(f"{head[0]:<44}{head[1]:>18}{head[2]:>18}{head[3]:>8}{head[4]:>11}")
    rss = f"{vs['peak_rss_kib'] / 1024:,.0f} MiB"
    print(
        f"{result['workload']['description']:<44}{ref['rows_per_s']:>18,}"
        f"{vs['rows_per_s']:>18,}{result['ratio']:>8.2f}{rss:>11}"
    )
    if vs["streaming_rows_per_s"]:
        print(
            f"{'  viewstore without start-up':<44}{'':>18}"
            f"{vs['streaming_rows_per_s']:>18,}{result['ratio_streaming']:>8.2f}"
        )
    print()
    print(
        f"{'consumer':<28}{'seconds':>9}{'consumer CPU':>14}{'postgres CPU':>14}{'other CPU':>11}"
    )
    rows = [
        ("pg_recvlogical", ref["seconds"], ref["cpu"]),
        ("viewstore run", vs["seconds"], vs["cpu"]),
    ]
    for name, seconds, cpu in rows:
        print(
            f"{name:<28}{seconds:>9.2f}{cpu['consumer_s']:>12.2f} s"
            f"{cpu['postgres_s']:>12.2f} s{cpu['other_s']:>9.2f} s"
        )
    if vs["startup_seconds"] is not None:
        print(f"{'  of which start-up':<28}{vs['startup_seconds']:>9.2f}")
    print(f"\nresults: {result['out']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workload = workload_of(args)
    command_line = shlex.join([sys.executable, *sys.argv])

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")  # so that clean-up runs

    signal.signal(signal.SIGTERM, on_sigterm)
    began = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="viewstore-bench-"))
    pg = ThrowawayPostgres(PG_SETTINGS)
    bench: Bench | None = None
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "mode": "big-txn" if args.big_txn else "quick" if args.quick else "batched",
        "command_line": command_line,
        "started_at": began.isoformat(timespec="seconds"),
    }
    status = 0
    try:
        print(f"workload: {workload.describe()}; starting postgres", flush=True)
        pg.start()
        bench = Bench(args, workload, pg, work)
        result["machine"] = machine_info(pg)
        result["postgres_settings"] = pg.settings
        bench.seed()
        snapshot_s = bench.snapshot()
        print(f"viewstore snapshot taken in {snapshot_s:.1f}s; loading", flush=True)
        loaded = bench.load()
        target = loaded.pop("target")
        result["workload"] = {
            "description": workload.describe() + (", seed view kept" if args.views else ""),
            "views": VIEW_SQL if args.views else None,
            "table": "player_scores",
            "rows": workload.rows,
            "txn_size": workload.txn_size,
            "transactions": workload.transactions,
            **loaded,
        }
        print(
            f"loaded in {loaded['load_seconds']:.1f}s, {loaded['wal_bytes'] / 1e6:,.0f} MB of "
            f"WAL up to {target}; pg_recvlogical",
            flush=True,
        )
        before = bench.run_reference(target, bench.ref_slot)
        print(f"pg_recvlogical: {before['seconds']:.2f}s; viewstore", flush=True)
        result["viewstore"] = bench.run_viewstore(Lsn.parse(loaded["start_lsn"]), target)
        print("pg_recvlogical again, after viewstore", flush=True)
        after = bench.run_reference(target, bench.ref_after_slot)
        # The ratio is against the faster reference run: the conservative choice.
        result["reference"] = max(before, after, key=lambda r: r["rows_per_s"])
        result["reference_runs"] = {"before_viewstore": before, "after_viewstore": after}
        result["ratio"] = round(
            result["viewstore"]["rows_per_s"] / result["reference"]["rows_per_s"], 3
        )
        streaming = result["viewstore"]["streaming_rows_per_s"]
        result["ratio_streaming"] = (
            round(streaming / result["reference"]["rows_per_s"], 3) if streaming else None
        )
    except BenchError as exc:
        status = 1
        result["error"] = str(exc)
        if exc.partial is not None:
            result["viewstore_partial"] = exc.partial
        print(f"Error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"Try: {exc.hint}", file=sys.stderr)
    except ViewstoreError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"Try: {exc.hint}", file=sys.stderr)
        return 1
    finally:
        leaked = bench.cleanup() if bench is not None else []
        pg.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
        if leaked:
            print(f"warning: slots not dropped before the cluster was removed: {leaked}")
    result["slots_left_behind"] = leaked  # [] unless a slot could not be dropped
    result["duration_s"] = round((datetime.now(UTC) - began).total_seconds(), 1)
    result["out"] = str(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if status == 0:
        print_table(result)
    else:
        print(f"partial results: {args.out}", file=sys.stderr)
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: clean-up has run in main()
        print(f"interrupted: {exc or 'Ctrl-C'}", file=sys.stderr)
        sys.exit(130)
