#!/usr/bin/env python3
"""View benchmark: keeping the seed's leaderboard current, against REFRESH MATERIALIZED VIEW.

Data. A throwaway Postgres with the seed's schema (`players`, `player_scores` with
DECIMAL(10, 2) scores) holding `--players` players (default 1,000,000: the view then has a
million rows) and `--scores` score rows (default 1,000,000), and the seed's view pasted verbatim,
both in Postgres (as a materialized view) and in viewstore's views.sql.

Reference. `REFRESH MATERIALIZED VIEW player_total_scores` on that data, timed `--refreshes`
times (median): what "keeping the view current" costs when it is recomputed.

viewstore. Two stores follow one publication: `views` keeps the seed view, `mirror` keeps only
the tables (the ingest cost without any view). Both take their snapshot (timed for `views`: the
snapshot, the join index and the backfill of the view), are stopped, and then `--txns`
transactions (default 20,000) are committed with both stopped: each inserts a score for a
random player, or one in ten updates a score and one in ten deletes one. Each store is then
started and timed from its "streaming from slot" log line until its slot confirms the WAL
position after the load (viewstore confirms only what it has synced). Per-transaction cost is
that time over the number of transactions; the view's own cost is the difference between the
two stores.

Reads. On the caught-up store: the top 10 by total_score, a point lookup by player_id, each
through the Python API (a read-only open of the store per call, as another process would) and
on an open store; median of 25 calls each. Finally the whole view is compared with Postgres
(REFRESH, then SELECT) and the benchmark fails if a row differs.

    scripts/bench_views.py            # bench/results/views.json
    scripts/bench_views.py --quick    # 20k players, 20k scores, 2,000 txns: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

import viewstore
from viewstore.ingest.lsn import Lsn
from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.db import Store
from viewstore.store.demo import SEED_SQL, VIEW_SQL
from viewstore.store.viewread import find_view, query_rows

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PG_SETTINGS = {"autovacuum": "off", "shared_buffers": "1GB"}

# The seed's tables and view, verbatim, as the demo has them.
SCHEMA = "\n".join(SEED_SQL[:2])
VIEW = VIEW_SQL


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lsn_of(conn: psycopg.Connection[Any], query: str, *params: Any) -> Lsn | None:
    row = conn.execute(query, params).fetchone()  # type: ignore[call-overload]
    return Lsn.parse(row[0]) if row and row[0] else None


PROFILE: list[str] = []  # py-spy command prefix for the timed `views` catch-up (--profile)
CHILDREN: list[subprocess.Popen[bytes]] = []  # killed on exit, whatever the exit


def start_run(pg: ThrowawayPostgres, data: Path, *extra: str) -> subprocess.Popen[bytes]:
    out = open(data.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
    argv = [sys.executable, "-m", "viewstore.cli", "run", "--dsn", pg.dsn, "--data", str(data)]

    proc = subprocess.Popen(
        [*argv, "--publication", "bench_pub", "--slot", data.name, *extra],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    if proc.wait(120) != 0:
        raise SystemExit(f"viewstore run exited with {proc.returncode}")


def streaming_seen(data: Path) -> bool:
    return "streaming from slot" in data.with_suffix(".log").read_text()


def wait_streaming(proc: subprocess.Popen[bytes], data: Path, timeout: float) -> float:
    """Seconds from now until the log says streaming began (after snapshot and backfill)."""
    began = time.monotonic()
    while not streaming_seen(data):
        if proc.poll() is not None:
            raise SystemExit(f"viewstore run died:\n{data.with_suffix('.log').read_text()[-3000:]}")
        if time.monotonic() - began > timeout:
            raise SystemExit("viewstore run did not start streaming in time")
        time.sleep(0.05)
    return time.monotonic() - began


def wait_confirmed(
    conn: psycopg.Connection[Any], slot: str, target: Lsn, proc: subprocess.Popen[bytes]
) -> None:
    while True:
        got = lsn_of(
            conn,
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            slot,
        )
        if got is not None and got >= target:
            return
        if proc.poll() is not None:
            raise SystemExit(f"viewstore run exited with {proc.returncode}")
        time.sleep(0.02)


def catch_up(pg: ThrowawayPostgres, data: Path, target: Lsn, views: Path | None) -> float:
    """Start a stopped store and time it from streaming start to having synced `target`."""
    data.with_suffix(".log").write_text("")
    proc = start_run(pg, data, *(["--views", str(views)] if views else []))
    spy = None
    if views and PROFILE:
        spy = subprocess.Popen([*PROFILE, "--pid", str(proc.pid)], stdout=subprocess.DEVNULL)
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        wait_streaming(proc, data, 600)
        began = time.monotonic()
        wait_confirmed(conn, data.name, target, proc)
        seconds = time.monotonic() - began
    stop(proc)
    if spy is not None:
        spy.wait(60)
    return seconds


def load(conn: psycopg.Connection[Any], txns: int, players: int, seed: int) -> Lsn:
    rng = random.Random(seed)
    max_score = conn.execute("SELECT max(id) FROM player_scores").fetchone()[0] or 1  # type: ignore[index]
    for _ in range(txns):
        r = rng.random()
        with conn.transaction():
            if r < 0.1:
                conn.execute(
                    "UPDATE player_scores SET score = %s WHERE id = %s",
                    (rng.randint(0, 10000) / 100, rng.randint(1, max_score)),
                )
            elif r < 0.2:
                conn.execute(
                    "DELETE FROM player_scores WHERE id = %s", (rng.randint(1, max_score),)
                )
            else:
                conn.execute(
                    "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)",
                    (rng.randint(1, players), rng.randint(0, 10000) / 100),
                )
    target = lsn_of(conn, "SELECT pg_current_wal_insert_lsn()::text")
    assert target is not None
    return target


def timed(fn: Any, n: int = 25) -> float:
    """Median milliseconds of `n` calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds: Postgres and files go


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        bench()
    finally:
        for proc in CHILDREN:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--players", type=int, default=1_000_000)
    ap.add_argument("--scores", type=int, default=1_000_000)
    ap.add_argument("--txns", type=int, default=20_000)
    ap.add_argument("--refreshes", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--profile", action="store_true", help="py-spy the views store's catch-up")
    args = ap.parse_args()
    if args.quick:
        args.players, args.scores = 20_000, 20_000
        args.txns = min(args.txns, 2_000)
    out = args.out or RESULTS / ("views_quick.json" if args.quick else "views.json")
    if args.profile:
        speedscope = out.with_suffix(".speedscope.json")
        PROFILE.extend(["py-spy", "record", "-r", "200", "-f", "speedscope", "-o", str(speedscope)])
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "players": args.players,
        "scores": args.scores,
        "transactions": args.txns,
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-views-") as tmp,
        ThrowawayPostgres(settings=PG_SETTINGS) as pg,
    ):
        work = Path(tmp)
        views = work / "views.sql"
        views.write_text(VIEW)
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            result["postgres"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            conn.execute(SCHEMA)
            log(f"loading {args.players:,} players and {args.scores:,} scores")
            conn.execute(
                "INSERT INTO players (name) SELECT 'player ' || g FROM generate_series(1, %s) g",
                (args.players,),
            )
            conn.execute(
                "INSERT INTO player_scores (player_id, score) SELECT 1 + (g::bigint * 7919) %% %s,"
                " ((g::bigint * 104729) %% 10000) / 100.0 FROM generate_series(1, %s) g",
                (args.players, args.scores),
            )
            conn.execute("VACUUM ANALYZE players, player_scores")
            conn.execute(VIEW)
            conn.execute("CREATE PUBLICATION bench_pub FOR TABLE players, player_scores")

            refresh = []
            for _ in range(args.refreshes):
                t = time.perf_counter()
                conn.execute("REFRESH MATERIALIZED VIEW player_total_scores")
                refresh.append(time.perf_counter() - t)
            result["refresh_seconds"] = [round(x, 3) for x in refresh]
            result["refresh_median_ms"] = round(statistics.median(refresh) * 1000, 1)
            log(f"REFRESH MATERIALIZED VIEW: {result['refresh_median_ms']:,} ms (median)")

            # First starts: snapshot (and for `views`, join index + backfill of the view).
            built = {}
            for name, extra in (("views", ["--views", str(views)]), ("mirror", [])):
                data = work / name
                began = time.monotonic()
                proc = start_run(pg, data, *extra)
                wait_streaming(proc, data, 3600)
                built[name] = round(time.monotonic() - began, 2)
                stop(proc)
                log(f"{name}: snapshot{' + view build' if extra else ''} took {built[name]} s")
            result["first_start_seconds"] = built

            log(f"committing {args.txns:,} transactions with both stores stopped")
            target = load(conn, args.txns, args.players, seed=1)

            per_txn = {}
            for name in ("views", "mirror"):
                seconds = catch_up(pg, work / name, target, views if name == "views" else None)
                per_txn[name] = round(seconds / args.txns * 1e6, 1)
                log(f"{name}: {args.txns:,} txns in {seconds:.2f} s = {per_txn[name]} µs/txn")
            result["catch_up_us_per_txn"] = per_txn
            result["view_us_per_txn"] = round(per_txn["views"] - per_txn["mirror"], 1)
            result["txns_per_refresh"] = round(
                result["refresh_median_ms"] * 1000 / per_txn["views"]
            )

            reader = viewstore.open(work / "views")
            top = reader.query("player_total_scores", order_by="total_score", desc=True, limit=10)
            pid = top[0]["player_id"]
            reads = {
                "top10_api_ms": timed(
                    lambda: reader.query(
                        "player_total_scores", order_by="total_score", desc=True, limit=10
                    )
                ),
                "point_api_ms": timed(
                    lambda: reader.query("player_total_scores", where={"player_id": pid})
                ),
            }
            with Store.open(work / "views", readonly=True) as store:
                info = find_view(store, "player_total_scores")
                reads["top10_open_store_ms"] = timed(
                    lambda: query_rows(store, info, order_by="total_score", desc=True, limit=10)
                )
                reads["point_open_store_ms"] = timed(
                    lambda: query_rows(store, info, where={"player_id": pid})
                )
            result["reads"] = reads
            log(f"reads: {reads}")

            conn.execute("REFRESH MATERIALIZED VIEW player_total_scores")
            want = {
                (r[0], r[1], str(r[2]))
                for r in conn.execute("SELECT * FROM player_total_scores").fetchall()
            }
            got = {
                (r["player_id"], r["name"], str(r["total_score"]))
                for r in reader.query("player_total_scores")
            }
            if got != want:
                raise SystemExit(
                    f"the view differs from Postgres: {len(want - got)} missing, "
                    f"{len(got - want)} extra"
                )
            result["view_rows"] = len(got)
            log(f"the view equals Postgres: {len(got):,} rows")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(
        f"keeping the view current: {result['catch_up_us_per_txn']['views']} µs/txn "
        f"({result['view_us_per_txn']} µs of it the view); REFRESH: "
        f"{result['refresh_median_ms']:,} ms = {result['txns_per_refresh']:,} txns' worth. "
        f"Written to {out}"
    )


if __name__ == "__main__":
    main()
