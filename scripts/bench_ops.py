#!/usr/bin/env python3
"""Operations benchmarks: initial snapshot, recovery after kill -9, and memory (issue 6: 4, 6, 7).

Each benchmark starts its own throwaway Postgres (ThrowawayPostgres, fsync off, autovacuum off,
shared_buffers 1GB, as scripts/bench_ingest.py) holding the seed's schema (viewstore/demo.py
SEED_SQL: `players`, `player_scores` with DECIMAL(10, 2) scores) with 1,000 players, and runs
`viewstore run` as a subprocess (the interpreter itself, `-m viewstore.cli`) on a publication of
both tables; viewstore's RocksDB writes are synced as in production. Every run's CPU (consumer,
Postgres cluster, the rest of the machine) and peak RSS are recorded. Peak RSS is the process's
VmHWM, read at every poll until it exits (every 5 ms while it stops); wait4's ru_maxrss is
recorded but not used: Linux starts it at the RSS of the image the child had before exec, this
script's own, which passes 500 MiB after the recovery check has read a million rows.
Everything started is stopped, and every slot dropped, on exit, Ctrl-C and SIGTERM.

snapshot. Workload: `--snapshot-rows` rows in `player_scores` (default 10,000,000; quick
200,000), then VACUUM (FREEZE, ANALYZE) so that neither reader sets hint bits for the other.
viewstore: its first start, timed from process start until its "snapshot complete" log line
(rows/s = player_scores rows over that time), also split at the "created slot" line (start-up:
interpreter, imports, preflight, slot creation) and to "streaming from slot"; the store is then
checked to hold every row. Reference: `psql -c "\\copy public.player_scores (id, score,
player_id) to '/dev/null'"`, the same COPY viewstore issues, its output discarded: run before
and after viewstore, the faster counts. Ratio: viewstore rows/s over the reference's.

recovery. Workload: viewstore runs (the seed's view in a views file: viewstore/demo.py VIEW_SQL,
and a second store without views, on its own slot), catches up with a warm-up of 10 1,000-row
transactions, and is killed with SIGKILL; then `--recovery-rows` rows (default 1,000,000; quick
50,000) are inserted in 1,000-row transactions and viewstore is restarted. Timed from the
restart to its "streaming from slot" line (start-up, RocksDB recovery, preflight) and until its
slot's confirmed_flush_lsn reaches the WAL insert position after the load (viewstore confirms
only what it has synced); then stopped, and the store checked: applied LSN, row counts (status
API), every row's id and the sum of the scores (viewstore.open(dir).rows against Postgres), and
the view against Postgres's own evaluation of its query. Reference: `pg_recvlogical` draining a
slot created at the kill over the same backlog to /dev/null (pgoutput proto_version 1, as
bench_ingest.py): how fast Postgres decodes and sends it; run before and after viewstore, the
faster counts. Ratio: viewstore catch-up rows/s (restart to caught up) over the reference's.

memory. Peak RSS of every viewstore run of this invocation, and of one `--big-txn-rows`-row
transaction (default 5,000,000; quick 300,000; viewstore applies transactions over
--large-txn-rows, 250,000 by default, in chunks with an undo log), run with
scripts/bench_ingest.py's functions (its schema, its own cluster, no pg_recvlogical).
Reference: the peak RSS of the same viewstore streaming `--recovery-rows` rows in 1,000-row
transactions (bench_ingest.py's batched workload, another cluster). Ratio: big-transaction peak
over batched peak (1.0: one huge transaction costs no more memory than many small ones); also
the peak over the transaction's WAL size.

    scripts/bench_ops.py                    # bench/results/{snapshot,recovery,memory}.json
    scripts/bench_ops.py recovery memory    # some of them
    scripts/bench_ops.py --quick            # a smoke test (under 90 s), into a temp directory
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import bench_ingest
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
from bench_ingest import Bench as IngestBench
from bench_ingest import Workload
from psycopg import sql

import viewstore
from viewstore.demo import SEED_SQL, VIEW, VIEW_SQL
from viewstore.errors import ViewstoreError
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.status import read_status

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
BENCHMARKS = ("snapshot", "recovery", "memory")
PLAYERS = 1_000
TXN_SIZE = 1_000
WARMUP_TXNS = 10  # recovery: transactions streamed before the kill
FULL = {"snapshot": 10_000_000, "recovery": 1_000_000, "big_txn": 5_000_000}
QUICK = {"snapshot": 200_000, "recovery": 50_000, "big_txn": 300_000}
LOAD_CHUNK = 1_000_000  # rows per INSERT when filling the snapshot's table

SCHEMA = "\n".join(SEED_SQL[:2])  # the seed's tables, verbatim
INSERT_PLAYERS = "INSERT INTO players (name) SELECT 'player ' || g FROM generate_series(1, %s) g"
# Player ids 1..1000, each once in every 1,000 consecutive rows; scores 0.00 to 999.99.
INSERT_SCORES = """
INSERT INTO player_scores (player_id, score)
SELECT (1 + g %% 1000)::int, ((g * 7919) %% 100000) / 100.0
FROM generate_series(%s::bigint, %s::bigint) AS g
"""
# The seed view's query, for Postgres to evaluate (the view itself is not created there).
VIEW_QUERY = VIEW_SQL.split(" AS\n", 1)[1].rstrip().rstrip(";") + " ORDER BY 1"
COPY_COLUMNS = "public.player_scores (id, score, player_id)"  # the order viewstore copies in


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- one cluster with viewstore runs on it --------------------------------------------------


class HwmChild(Child):
    """A Child whose own peak RSS is known: VmHWM is read at every poll while it lives (watch
    polls every 50 ms, and `wait` every 5 ms while it stops), so the last reading is its peak
    to within a few ms of its exit. wait4's ru_maxrss is no measure of the child: Linux starts
    it at the RSS of the memory image the child had before exec, which is this script's."""

    def __init__(self, argv: list[str], log: Path) -> None:
        super().__init__(argv, log)  # Popen returns once the exec has happened
        self.hwm_kib = 0

    def poll(self) -> bool:
        if self.exit_code is None:
            self.hwm_kib = max(self.hwm_kib, self.proc_status_kib("VmHWM") or 0)
        return super().poll()


@dataclass
class Run:
    """One `viewstore run` process: its Child (wait4 rusage) and its wall-clock start."""

    child: HwmChild
    wall: float
    data_dir: Path
    slot: str

    @property
    def log(self) -> Path:
        return self.child.log


@dataclass
class Cluster:
    pg: ThrowawayPostgres
    work: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    children: list[HwmChild] = field(default_factory=list)
    slots: list[str] = field(default_factory=list)

    @property
    def publication(self) -> str:
        return f"ops_pub_{self.suffix}"

    def connect(self, autocommit: bool = True) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.dsn, autocommit=autocommit)

    def postmaster(self) -> int:
        return int((self.pg.data_dir / "postmaster.pid").read_text().splitlines()[0])

    def seed(self) -> None:
        with self.connect() as conn:
            conn.execute(SCHEMA)
            conn.execute(INSERT_PLAYERS, (PLAYERS,))
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE players, player_scores").format(
                    sql.Identifier(self.publication)
                )
            )

    def slot_name(self, name: str) -> str:
        slot = f"ops_{name}_{self.suffix}"
        if slot not in self.slots:
            self.slots.append(slot)
        return slot

    def start(self, argv: list[str], log_name: str) -> HwmChild:
        child = HwmChild(argv, self.work / log_name)
        self.children.append(child)
        return child

    def viewstore(self, name: str, log_name: str, views: Path | None = None) -> Run:
        data_dir = self.work / name
        slot = self.slot_name(name)
        argv = [
            sys.executable, "-m", "viewstore.cli", "run",
            "--dsn", self.pg.dsn, "--data", str(data_dir),
            "--publication", self.publication, "--slot", slot,
            *(["--views", str(views)] if views else []),
        ]  # fmt: skip
        wall = time.time()
        return Run(self.start(argv, log_name), wall, data_dir, slot)

    def confirmed(self, conn: psycopg.Connection[Any], slot: str) -> Lsn | None:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
        return Lsn.parse(row[0]) if row and row[0] else None

    def cleanup(self) -> list[str]:
        """Kill what still runs and drop every slot; returns the slots left behind."""
        for child in self.children:
            with contextlib.suppress(Exception):
                child.kill()
        if not self.pg.running or not self.slots:
            return []
        with contextlib.suppress(psycopg.Error), self.connect() as conn:
            deadline = time.monotonic() + 10
            while True:  # a walsender outlives its client for a moment
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = ANY(%s) AND active_pid IS NULL",
                    (self.slots,),
                )
                left = conn.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY(%s)",
                    (self.slots,),
                ).fetchall()
                if not left or time.monotonic() > deadline:
                    return [name for (name,) in left]
                time.sleep(0.1)
        return list(self.slots)


@contextlib.contextmanager
def cluster(work: Path, leaked: list[str]) -> Any:
    pg = ThrowawayPostgres(PG_SETTINGS)
    c: Cluster | None = None
    try:
        pg.start()
        c = Cluster(pg, work)
        yield c
    finally:
        if c is not None:
            leaked.extend(c.cleanup())
        pg.stop()


def watch(
    run: Run, done: Callable[[], bool], timeout: float, what: str
) -> tuple[float, float, list[dict[str, Any]], int | None]:
    """Poll `done` every POLL seconds while `run` lives; returns when it is true: the monotonic
    and wall times it became true, an RSS/CPU timeline (one sample a second), and VmHWM then."""
    child = run.child
    timeline: list[dict[str, Any]] = []
    next_sample = child.started
    while True:
        now = time.monotonic()
        if child.poll():
            raise BenchError(
                f"viewstore run exited with {child.exit_code} before {what}:\n{child.log_tail()}"
            )
        if now >= next_sample:
            rss = child.proc_status_kib("VmRSS") or 0
            timeline.append(
                {
                    "t": round(now - child.started, 2),
                    "rss_mib": round(rss / 1024, 1),
                    "cpu_s": round(child.cpu_seconds(), 2),
                }
            )
            next_sample += TIMELINE_EVERY
        if done():
            return time.monotonic(), time.time(), timeline, child.proc_status_kib("VmHWM")
        if now - child.started > timeout:
            child.kill()
            raise BenchError(f"viewstore run: not {what} after --timeout {timeout:.0f}s")
        time.sleep(max(0.0, POLL - (time.monotonic() - now)))


def stop(run: Run) -> None:
    run.child.signal(signal.SIGTERM)
    code = run.child.wait(300)
    if code != 0:
        raise BenchError(f"viewstore run exited with {code} on SIGTERM:\n{run.child.log_tail()}")


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) (.*)$")


def log_lines(run: Run) -> list[tuple[float, str]]:
    """(seconds since the process started, message) of each line of its log."""
    out = []
    for line in run.log.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match:
            stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").timestamp()
            out.append((round(stamp + int(match[2]) / 1000 - run.wall, 3), match[4]))
    return out


def log_time(lines: list[tuple[float, str]], needle: str) -> float | None:
    return next((t for t, msg in lines if needle in msg), None)


def peak(run: Run, hwm: int | None) -> dict[str, Any]:
    """The run's peak RSS, once it has exited: VmHWM until its exit (`hwm`: as it was when the
    run was caught up, before it was stopped; wait4's ru_maxrss for the record only)."""
    return {
        "peak_rss_kib": run.child.hwm_kib,
        "vm_hwm_kib_before_stop": hwm,
        "wait4_max_rss_kib": run.child.max_rss_kib,
    }


def wal_end(conn: psycopg.Connection[Any]) -> Lsn:
    """The WAL insert position now (not pg_current_wal_lsn(): with synchronous_commit=off the
    last commit may not be written yet), moved back off a page header that no consumer is
    shown until more WAL is written (as bench_ingest.py's load)."""
    target = query_lsn(conn, "SELECT pg_current_wal_insert_lsn()::text")
    block, segment = conn.execute(
        "SELECT current_setting('wal_block_size')::int,"
        " pg_size_bytes(current_setting('wal_segment_size'))"
    ).fetchone() or (8192, 16 << 20)
    if target % segment == 40:
        return Lsn(target - 40)
    if target % block == 24:
        return Lsn(target - 24)
    return target


def insert_scores(conn: psycopg.Connection[Any], first: int, rows: int, txn_size: int) -> None:
    """Insert `rows` scores in transactions of `txn_size` (conn not in autocommit)."""
    for start in range(first, first + rows, txn_size):
        conn.execute(INSERT_SCORES, (start, min(start + txn_size, first + rows) - 1))
        conn.commit()


def run_child(
    c: Cluster, argv: list[str], log_name: str, timeout: float, connections: int = 0
) -> dict[str, Any]:
    """Run a reference program to completion, with its CPU and the cluster's (`connections`:
    this script's own, open meanwhile)."""
    meter = CpuMeter(c.postmaster(), connections=connections)
    meter.begin()
    child = c.start(argv, log_name)
    try:
        code = child.wait(timeout)
    except BenchError:
        child.kill()
        raise BenchError(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s") from None
    if code != 0:
        raise BenchError(f"{Path(argv[0]).name} exited with {code}:\n{child.log_tail()}")
    assert child.ended is not None
    seconds = child.ended - child.started
    return {
        "command": redacted(argv),
        "seconds": round(seconds, 3),
        "peak_rss_kib": child.hwm_kib,
        "cpu": meter.end(seconds, child.cpu_seconds()),
    }


# -- 4. snapshot ----------------------------------------------------------------------------


def bench_snapshot(args: argparse.Namespace, c: Cluster, result: dict[str, Any]) -> None:
    rows = args.snapshot_rows
    log(f"snapshot: loading {rows:,} rows into player_scores")
    c.seed()
    began = time.monotonic()
    with c.connect() as conn:
        for first in range(1, rows + 1, LOAD_CHUNK):
            conn.execute(INSERT_SCORES, (first, min(first + LOAD_CHUNK, rows + 1) - 1))
        load_s = time.monotonic() - began
        conn.execute("VACUUM (FREEZE, ANALYZE) players, player_scores")
        conn.execute("CHECKPOINT")
        size = conn.execute(
            "SELECT pg_relation_size('player_scores'), pg_total_relation_size('player_scores')"
        ).fetchone()
    assert size is not None
    result["workload"] = {
        "description": f"first start on {rows:,} rows in player_scores (+{PLAYERS:,} players)",
        "table": "public.player_scores",
        "rows": rows,
        "players": PLAYERS,
        "table_bytes": size[0],
        "table_bytes_with_indexes": size[1],
        "load_seconds": round(load_s, 3),
        "prepared": "VACUUM (FREEZE, ANALYZE), CHECKPOINT after the load",
    }
    log(f"snapshot: loaded in {load_s:.1f}s ({size[0] / 1e6:,.0f} MB); psql COPY")
    psql = [
        str(c.pg.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.pg.dsn,
        "-c", f"\\copy {COPY_COLUMNS} to '/dev/null'",
    ]  # fmt: skip
    before = run_child(c, psql, "psql-before.log", args.timeout)
    log(f"snapshot: psql COPY {before['seconds']:.2f}s; viewstore run (first start)")

    meter = CpuMeter(c.postmaster(), connections=0)
    meter.begin()
    code = source_state()
    run = c.viewstore("snapshot", "viewstore-snapshot.log")
    _, _, timeline, hwm = watch(
        run,
        lambda: "streaming from slot" in run.log.read_text(errors="replace"),
        args.timeout,
        "streaming",
    )
    streaming_mono = time.monotonic()
    stop(run)
    cpu = meter.end(streaming_mono - run.child.started, run.child.cpu_seconds())
    lines = log_lines(run)
    status = read_status(run.data_dir)
    tables = {t.name: t.rows for t in status.tables}
    want = {"public.players": PLAYERS, "public.player_scores": rows}
    if status.snapshot != "complete" or tables != want:
        raise BenchError(f"store after the snapshot: {status.snapshot}, {tables} (want {want})")
    log("snapshot: psql COPY again")
    after = run_child(c, psql, "psql-after.log", args.timeout)

    created = log_time(lines, "created slot")
    done = log_time(lines, "snapshot public.player_scores: done")
    complete = log_time(lines, "snapshot complete")
    streaming = log_time(lines, "streaming from slot")
    if created is None or complete is None or streaming is None or done is None:
        raise BenchError(f"viewstore's log lacks the snapshot's lines:\n{run.child.log_tail()}")
    logged_rate = next(
        (
            m
            for _, msg in lines
            if (m := re.search(r"player_scores: done, .*\(([\d,]+) rows/s", msg))
        ),
        None,
    )
    for ref in (before, after):
        ref["rows_per_s"] = round(rows / ref["seconds"])
    reference = max(before, after, key=lambda r: r["rows_per_s"])
    vs = {
        "command": redacted(run.child.argv),
        "code": code,
        "seconds_to_snapshot_complete": complete,
        "rows_per_s": round(rows / complete),
        "startup_seconds": created,  # process start to the slot's creation
        "copy_seconds": round(complete - created, 3),  # created slot to snapshot complete
        "copy_rows_per_s": round(rows / (complete - created)),
        "player_scores_done_seconds": done,
        "logged_player_scores_rows_per_s": (
            int(logged_rate[1].replace(",", "")) if logged_rate else None
        ),
        "seconds_to_streaming": streaming,
        **peak(run, hwm),
        "cpu": cpu,
        "cpu_rows_per_core_s": round(rows / cpu["consumer_s"]) if cpu["consumer_s"] else None,
        "status_after_stop": {"snapshot": status.snapshot, "tables": tables},
        "log": lines,
        "timeline": timeline,
    }
    RUNS.append(
        {"benchmark": "snapshot", "run": f"first start, {rows:,}-row snapshot", **peak(run, hwm)}
    )
    result["reference"] = {
        "description": "psql \\copy of the same columns to /dev/null (faster of before/after)",
        **reference,
    }
    result["reference_runs"] = {"before_viewstore": before, "after_viewstore": after}
    result["viewstore"] = vs
    result["ratio"] = round(vs["rows_per_s"] / reference["rows_per_s"], 3)
    result["ratio_copy_phase"] = round(vs["copy_rows_per_s"] / reference["rows_per_s"], 3)
    result["ratio_meaning"] = (
        "viewstore rows/s from process start to 'snapshot complete' over psql COPY rows/s "
        "(ratio_copy_phase: from 'created slot' instead)"
    )


def print_snapshot(r: dict[str, Any]) -> None:
    ref, vs = r["reference"], r["viewstore"]
    print(f"\nsnapshot: {r['workload']['description']}")
    print(f"{'':<40}{'seconds':>10}{'rows/s':>12}{'ratio':>8}{'CPU s':>9}{'peak RSS':>11}")
    print(
        f"{'psql COPY to /dev/null (reference)':<40}{ref['seconds']:>10.2f}"
        f"{ref['rows_per_s']:>12,}{'':>8}{ref['cpu']['consumer_s']:>9.1f}"
        f"{ref['peak_rss_kib'] / 1024:>7,.0f} MiB"
    )
    print(
        f"{'viewstore run: start to snapshot done':<40}{vs['seconds_to_snapshot_complete']:>10.2f}"
        f"{vs['rows_per_s']:>12,}{r['ratio']:>8.3f}{vs['cpu']['consumer_s']:>9.1f}"
        f"{vs['peak_rss_kib'] / 1024:>7,.0f} MiB"
    )
    print(
        f"{'  copy phase (created slot to done)':<40}{vs['copy_seconds']:>10.2f}"
        f"{vs['copy_rows_per_s']:>12,}{r['ratio_copy_phase']:>8.3f}"
    )
    print(f"{'  start-up (to created slot)':<40}{vs['startup_seconds']:>10.2f}")
    print(f"{'  to streaming from slot':<40}{vs['seconds_to_streaming']:>10.2f}")
    print(f"{'  postgres CPU during viewstore run':<40}{vs['cpu']['postgres_s']:>10.2f}")


# -- 6. recovery ----------------------------------------------------------------------------


def check_recovered(
    conn: psycopg.Connection[Any], run: Run, target: Lsn, views: bool
) -> dict[str, Any]:
    """The restarted store holds the target LSN, every row and (with views) the right view."""
    status = read_status(run.data_dir)
    tables = {t.name: t.rows for t in status.tables}
    pg_rows, pg_sum, pg_max = conn.execute(
        "SELECT count(*), sum(score), max(id) FROM player_scores"
    ).fetchone() or (0, 0, 0)
    want = {"public.players": PLAYERS, "public.player_scores": pg_rows}
    if Lsn.parse(status.applied_lsn) < target or tables != want:
        raise BenchError(
            f"store {run.data_dir.name} after recovery: applied {status.applied_lsn} (target "
            f"{target}), rows {tables} (expected {want})"
        )
    reader = viewstore.open(run.data_dir)
    scores = reader.rows("public.player_scores")
    ids = sorted(r["id"] for r in scores)
    total = sum((r["score"] for r in scores), Decimal(0))
    if ids != list(range(1, pg_max + 1)) or len(ids) != pg_rows or total != pg_sum:
        raise BenchError(
            f"store {run.data_dir.name}: {len(ids):,} score rows summing to {total} "
            f"(Postgres: {pg_rows:,}, ids 1..{pg_max}, sum {pg_sum})"
        )
    out: dict[str, Any] = {
        "applied_lsn": status.applied_lsn,
        "transactions": status.transactions,
        "tables": tables,
        "player_scores_ids_match": True,
        "score_sum": str(total),
    }
    if views:
        got = sorted(tuple(_exact(v) for v in r.values()) for r in reader.query(VIEW))
        want_rows = [tuple(_exact(v) for v in r) for r in conn.execute(VIEW_QUERY).fetchall()]
        if got != want_rows:
            diff = next((g, w) for g, w in zip(got, want_rows, strict=False) if g != w)
            raise BenchError(
                f"view {VIEW}: {len(got)} rows, Postgres {len(want_rows)}; first difference {diff}"
            )
        out["view_rows_equal_postgres"] = len(got)
    return out


def _exact(v: Any) -> Any:
    # numeric compares by its exact text: Decimal('1.0') == Decimal('1.00') would hide a change
    return ("numeric", str(v)) if isinstance(v, Decimal) else v


def bench_recovery(args: argparse.Namespace, c: Cluster, result: dict[str, Any]) -> None:
    rows = args.recovery_rows
    variants = ["views", "mirror"] if not args.no_mirror_variant else ["views"]
    c.seed()
    views_file = c.work / "views.sql"
    views_file.write_text(VIEW_SQL)
    conn = c.connect()
    load_conn = c.connect(autocommit=False)
    first: dict[str, Any] = {}
    runs: dict[str, Run] = {}
    for name in variants:
        log(f"recovery: viewstore run ({name}): first start")
        run = c.viewstore(
            name, f"viewstore-{name}-first.log", views_file if name == "views" else None
        )
        runs[name] = run
        watch(
            run,
            lambda run=run: "streaming from slot" in run.log.read_text(errors="replace"),
            args.timeout,
            "streaming",
        )
    insert_scores(load_conn, 1, WARMUP_TXNS * TXN_SIZE, TXN_SIZE)
    warm = wal_end(load_conn)
    load_conn.commit()
    for name, run in runs.items():
        _, _, timeline, hwm = watch(
            run,
            lambda run=run: (c.confirmed(conn, run.slot) or 0) >= warm,
            args.timeout,
            f"caught up with {warm}",
        )
        run.child.kill()  # SIGKILL, and reaped: wait4's ru_maxrss
        first[name] = {"caught_up_to": str(warm), "killed": "SIGKILL", **peak(run, hwm)}
        RUNS.append(
            {"benchmark": "recovery", "run": f"{name}: first start, then kill -9", **peak(run, hwm)}
        )
    log(f"recovery: killed; inserting {rows:,} rows in {TXN_SIZE:,}-row transactions")
    ref_slots = [c.slot_name("ref_before"), c.slot_name("ref_after")]
    for slot in ref_slots:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    start_lsn = wal_end(load_conn)
    load_conn.commit()
    began = time.monotonic()
    insert_scores(load_conn, WARMUP_TXNS * TXN_SIZE + 1, rows, TXN_SIZE)
    load_s = time.monotonic() - began
    target = wal_end(load_conn)
    load_conn.commit()
    result["workload"] = {
        "description": (
            f"restart after kill -9, {rows:,} rows in {rows // TXN_SIZE:,} txns of "
            f"{TXN_SIZE:,} written while down"
        ),
        "rows": rows,
        "txn_size": TXN_SIZE,
        "transactions": -(-rows // TXN_SIZE),
        "rows_before_kill": WARMUP_TXNS * TXN_SIZE,
        "players": PLAYERS,
        "views_file": VIEW_SQL,
        "start_lsn": str(start_lsn),
        "target_lsn": str(target),
        "wal_bytes": int(target - start_lsn),
        "load_seconds": round(load_s, 3),
        "load_rows_per_s": round(rows / load_s),
    }

    def reference(slot: str) -> dict[str, Any]:
        argv = [
            str(c.pg.bindir / "pg_recvlogical"), "--start", "-S", slot, "-d", c.pg.dsn,
            "--plugin", "pgoutput", "-o", "proto_version=1",
            "-o", f"publication_names={c.publication}",
            "-f", "/dev/null", "--endpos", str(target), "--no-loop",
        ]  # fmt: skip
        ref = run_child(c, argv, f"pg_recvlogical-{slot}.log", args.timeout, connections=2)
        ref["rows_per_s"] = round(rows / ref["seconds"])
        return ref

    log(f"recovery: loaded in {load_s:.1f}s; pg_recvlogical")
    before = reference(ref_slots[0])
    restarts: dict[str, Any] = {}
    for name in variants:
        log(f"recovery: restarting viewstore ({name})")
        meter = CpuMeter(c.postmaster(), connections=2)  # conn and load_conn
        meter.begin()
        code = source_state()
        run = c.viewstore(
            name, f"viewstore-{name}-restart.log", views_file if name == "views" else None
        )
        caught_mono, caught_wall, timeline, hwm = watch(
            run,
            lambda run=run: (c.confirmed(conn, run.slot) or 0) >= target,
            args.timeout,
            f"caught up with {target}",
        )
        seconds = caught_mono - run.child.started
        stop(run)
        cpu = meter.end(seconds, run.child.cpu_seconds())
        lines = log_lines(run)
        streaming = log_time(lines, "streaming from slot")
        first_line = lines[0][0] if lines else None
        log(f"recovery: {name} caught up in {seconds:.2f}s; checking the store")
        restarts[name] = {
            "command": redacted(run.child.argv),
            "code": code,
            "seconds_to_caught_up": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "seconds_to_first_log_line": first_line,  # interpreter and imports
            "seconds_to_streaming": streaming,
            "streaming_to_caught_up_seconds": (
                None if streaming is None else round(caught_wall - run.wall - streaming, 3)
            ),
            **peak(run, hwm),
            "cpu": cpu,
            "store": check_recovered(conn, run, target, name == "views"),
            "log": lines,
            "timeline": timeline,
        }
        RUNS.append(
            {
                "benchmark": "recovery",
                "run": f"{name}: restart after kill -9, {rows:,}-row backlog",
                **peak(run, hwm),
            }
        )
    log("recovery: pg_recvlogical again")
    after = reference(ref_slots[1])
    conn.close()
    load_conn.close()
    ref = max(before, after, key=lambda r: r["rows_per_s"])
    result["reference"] = {
        "description": "pg_recvlogical draining the same backlog to /dev/null "
        "(faster of before/after viewstore)",
        **ref,
    }
    result["reference_runs"] = {"before_viewstore": before, "after_viewstore": after}
    result["first_start"] = first
    result["viewstore"] = restarts
    result["ratio"] = {
        n: round(r["rows_per_s"] / ref["rows_per_s"], 3) for n, r in restarts.items()
    }
    result["ratio_meaning"] = (
        "viewstore rows/s from restart to caught up over pg_recvlogical rows/s on the same backlog"
    )
    result["runs"] = [  # one line per store, as scripts/bench_report.py reads them
        {
            "description": (
                f"{'with the seed view' if n == 'views' else 'without views'}: restart after "
                f"kill -9, {rows:,} rows written while down"
            ),
            "streaming_seconds": vs["seconds_to_streaming"],
            "caught_up_seconds": vs["seconds_to_caught_up"],
            "rows_per_s": vs["rows_per_s"],
            "ratio": result["ratio"][n],
        }
        for n, vs in restarts.items()
    ]


def print_recovery(r: dict[str, Any]) -> None:
    ref = r["reference"]
    print(f"\nrecovery: {r['workload']['description']}")
    head = ("", "to streaming", "caught up", "rows/s", "ratio", "CPU s", "peak RSS")
    print(
        f"{head[0]:<34}{head[1]:>13}{head[2]:>11}{head[3]:>10}{head[4]:>8}{head[5]:>8}{head[6]:>11}"
    )
    print(
        f"{'pg_recvlogical (reference)':<34}{'':>13}{ref['seconds']:>11.2f}"
        f"{ref['rows_per_s']:>10,}{'':>8}{ref['cpu']['consumer_s']:>8.1f}"
    )
    for name, vs in r["viewstore"].items():
        label = f"viewstore {'with the seed view' if name == 'views' else 'without views'}"
        print(
            f"{label:<34}{vs['seconds_to_streaming'] or 0:>13.2f}"
            f"{vs['seconds_to_caught_up']:>11.2f}"
            f"{vs['rows_per_s']:>10,}{r['ratio'][name]:>8.3f}{vs['cpu']['consumer_s']:>8.1f}"
            f"{vs['peak_rss_kib'] / 1024:>7,.0f} MiB"
        )
    print(
        f"load: {r['workload']['load_seconds']:.2f}s ({r['workload']['load_rows_per_s']:,} rows/s),"
        f" {r['workload']['wal_bytes'] / 1e6:,.0f} MB of WAL; every store checked"
    )


# -- 7. memory ------------------------------------------------------------------------------


class PeakIngestBench(IngestBench):
    """bench_ingest.py's Bench, its processes started as HwmChild."""

    def start(self, argv: list[str], log_name: str) -> HwmChild:
        child = HwmChild(argv, self.work / log_name)
        self.children.append(child)
        return child


def ingest_run(
    args: argparse.Namespace, workload: Workload, work: Path, leaked: list[str]
) -> dict[str, Any]:
    """bench_ingest.py's viewstore measurement (its schema, cluster settings and checks) on
    `workload`, without its pg_recvlogical reference."""
    work.mkdir()
    size = ["--big-txn", str(workload.rows)] if workload.transactions == 1 else [
        "--rows", str(workload.rows), "--txn-size", str(workload.txn_size)
    ]  # fmt: skip
    ingest_args = bench_ingest.parse_args(
        [*size, "--timeout", str(args.timeout), "--max-rss-gib", str(args.max_rss_gib),
         "--out", str(work / "unused.json")]
    )  # fmt: skip
    pg = ThrowawayPostgres(PG_SETTINGS)
    bench: PeakIngestBench | None = None
    try:
        pg.start()
        bench = PeakIngestBench(ingest_args, workload, pg, work)
        bench.seed()
        bench.snapshot()
        loaded = bench.load()
        target = loaded.pop("target")
        vs = bench.run_viewstore(Lsn.parse(loaded["start_lsn"]), target)
        child = next(ch for ch in bench.children if ch.log.name == "viewstore-run.log")
        assert isinstance(child, HwmChild)
        # bench_ingest.py's own peak_rss_kib is max(VmHWM before SIGTERM, ru_maxrss); ru_maxrss
        # counts this script's RSS (see HwmChild), so it is replaced by VmHWM until exit.
        vs["bench_ingest_peak_rss_kib"] = vs.pop("peak_rss_kib")
        vs["vm_hwm_kib_before_stop"] = vs.pop("vm_hwm_kib")
        vs["wait4_max_rss_kib"] = vs.pop("max_rss_kib")
        vs["peak_rss_kib"] = child.hwm_kib
        text = (work / "viewstore-run.log").read_text(errors="replace")
        vs["chunked_large_txns"] = text.count("applying it in chunks")
        return {
            "workload": {"description": workload.describe(), **loaded},
            "viewstore": vs,
            "machine": machine_info(pg),
            "postgres_settings": pg.settings,
        }
    finally:
        if bench is not None:
            leaked.extend(bench.cleanup())
        pg.stop()


def bench_memory(
    args: argparse.Namespace, work: Path, leaked: list[str], result: dict[str, Any]
) -> None:
    big, batched = args.big_txn_rows, args.recovery_rows
    log(f"memory: one {big:,}-row transaction (bench_ingest.py's Bench)")
    big_run = ingest_run(args, Workload(big, big), work / "big_txn", leaked)
    result["machine"] = big_run["machine"]
    result["postgres_settings"] = big_run["postgres_settings"]
    vs = big_run["viewstore"]
    RUNS.append({"benchmark": "memory", "run": f"one {big:,}-row transaction", **_peaks(vs)})
    log(f"memory: {vs['peak_rss_kib'] / 1024:,.0f} MiB; {batched:,} rows in {TXN_SIZE:,}-row txns")
    ref_run = ingest_run(args, Workload(batched, TXN_SIZE), work / "batched", leaked)
    ref = ref_run["viewstore"]
    RUNS.append(
        {
            "benchmark": "memory",
            "run": f"{batched:,} rows in {TXN_SIZE:,}-row txns (reference)",
            **_peaks(ref),
        }
    )
    wal = big_run["workload"]["wal_bytes"]
    result["workload"] = {
        "description": f"one transaction of {big:,} rows (bench_ingest.py schema, no views)",
        **big_run["workload"],
        "large_txn_rows": 250_000,  # viewstore run's default --large-txn-rows / --chunk-rows
        "chunk_rows": 50_000,
    }
    result["reference"] = {
        "description": f"the same viewstore streaming {batched:,} rows in {TXN_SIZE:,}-row txns",
        "workload": ref_run["workload"],
        **_peaks(ref),
        "seconds": ref["seconds"],
        "rows_per_s": ref["rows_per_s"],
    }
    result["viewstore"] = {
        **_peaks(vs),
        **{k: vs[k] for k in ("command", "code", "seconds", "rows_per_s", "startup_seconds")},
        "chunked_large_txns": vs["chunked_large_txns"],
        "cpu": vs["cpu"],
        "timeline": vs["timeline"],
    }
    result["ratio"] = round(vs["peak_rss_kib"] / ref["peak_rss_kib"], 3)
    result["ratio_meaning"] = "big-transaction peak RSS over the batched run's peak RSS"
    result["peak_rss_over_txn_wal_bytes"] = round(vs["peak_rss_kib"] * 1024 / wal, 3)
    result["runs"] = list(RUNS)
    result["peaks"] = [  # as scripts/bench_report.py reads them
        {"run": f"{r['benchmark']}: {r['run']}", "peak_rss_mib": round(r["peak_rss_kib"] / 1024)}
        for r in RUNS
    ]
    result["max_peak_rss_kib"] = max(r["peak_rss_kib"] for r in RUNS)


def _peaks(vs: dict[str, Any]) -> dict[str, Any]:
    return {k: vs[k] for k in ("peak_rss_kib", "vm_hwm_kib_before_stop", "wait4_max_rss_kib")}


def print_memory(r: dict[str, Any]) -> None:
    print(f"\nmemory: {r['workload']['description']}")
    print(f"{'run':<62}{'peak RSS':>12}")
    for run in r["runs"]:
        print(f"{run['benchmark'] + ': ' + run['run']:<62}{run['peak_rss_kib'] / 1024:>8,.0f} MiB")
    print(
        f"ratio big txn / batched: {r['ratio']:.3f}; peak RSS / the transaction's "
        f"{r['workload']['wal_bytes'] / 1e6:,.0f} MB of WAL: {r['peak_rss_over_txn_wal_bytes']}"
    )


RUNS: list[dict[str, Any]] = []  # every viewstore run's peak RSS, for memory.json


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="See the module docstring (head -45 scripts/bench_ops.py) for the method.",
    )
    parser.add_argument(
        "benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads: under 90 s")
    parser.add_argument(
        "--out",
        type=Path,
        help="directory of the JSON results (default bench/results; with --quick a temporary "
        "directory, so that a smoke test never replaces the full results)",
    )
    parser.add_argument("--snapshot-rows", type=int)
    parser.add_argument("--recovery-rows", type=int)
    parser.add_argument("--big-txn-rows", type=int)
    parser.add_argument(
        "--no-mirror-variant",
        action="store_true",
        help="recovery: only the store with the view (not also one without views)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds each run may take (default 1800)"
    )
    parser.add_argument("--max-rss-gib", type=float, default=8.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    for name in args.benchmarks:
        if name not in BENCHMARKS:
            parser.error(f"unknown benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="vs-bench-ops-")) if args.quick else RESULTS
    args.benchmarks = [b for b in BENCHMARKS if b in args.benchmarks or not args.benchmarks]
    sizes = QUICK if args.quick else FULL
    for key in sizes:
        if getattr(args, f"{key}_rows") is None:
            setattr(args, f"{key}_rows", sizes[key])
        if getattr(args, f"{key}_rows") <= 0:
            parser.error(f"--{key.replace('_', '-')}-rows must be positive")
    if args.recovery_rows % TXN_SIZE:
        parser.error(f"--recovery-rows must be a multiple of {TXN_SIZE}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command_line = shlex.join([sys.executable, *sys.argv])

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")  # so that clean-up runs

    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="viewstore-bench-ops-"))
    status = 0
    try:
        for name in args.benchmarks:
            began = datetime.now(UTC)
            leaked: list[str] = []
            result: dict[str, Any] = {
                "benchmark": name,
                "mode": "quick" if args.quick else "full",
                "command_line": command_line,
                "started_at": began.isoformat(timespec="seconds"),
            }
            sub = work / name
            sub.mkdir()
            try:
                if name == "memory":
                    bench_memory(args, sub, leaked, result)
                else:
                    with cluster(sub, leaked) as c:
                        result["machine"] = machine_info(c.pg)
                        result["postgres_settings"] = c.pg.settings
                        (bench_snapshot if name == "snapshot" else bench_recovery)(args, c, result)
            except (BenchError, ViewstoreError, psycopg.Error) as exc:
                status = 1
                result["error"] = str(exc)
                print(f"Error: {name}: {exc}", file=sys.stderr)
            result["slots_left_behind"] = leaked
            result["duration_s"] = round((datetime.now(UTC) - began).total_seconds(), 1)
            out = args.out / f"{name}.json"
            result["out"] = str(out)
            args.out.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
            if "error" not in result:
                {"snapshot": print_snapshot, "recovery": print_recovery, "memory": print_memory}[
                    name
                ](result)
                print(f"results: {out}\n", flush=True)
            if leaked:
                print(f"warning: slots not dropped before the cluster was removed: {leaked}")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: clean-up has run in main()
        print(f"interrupted: {exc or 'Ctrl-C'}", file=sys.stderr)
        sys.exit(130)
