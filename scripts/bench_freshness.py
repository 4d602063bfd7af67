#!/usr/bin/env python3
"""Freshness benchmark: from a commit in Postgres to the change arriving at a subscriber.

Workload. A throwaway Postgres (synchronous_commit on, as in production: with it off, the
walsender only sends WAL once the WAL writer flushes it, every 200 ms) with the seed's schema,
`--players` players and the seed's view. `viewstore run --views ... --http` runs as its own
process. One writer commits single-row transactions (a score for a random player) at a steady
`--rate` per second for `--seconds`.

Measurement. A subscriber streams GET /views/player_total_scores/changes (NDJSON) over HTTP
and stamps each line as it arrives. Each change carries its transaction's commit timestamp
(Postgres's clock; same machine), so the latency of a transaction is the arrival of its +1 line
minus its commit time: decode, apply, the synced group write, the HTTP server's wake-up (it
polls the applied LSN every 5 ms) and the stream. Reported: p50, p99 and max over every
transaction, and how many arrived. Also the same for `viewstore serve`, a separate process
following the store (it catches up with the writer's log, polling every 20 ms), when
`--serve` is given.

    scripts/bench_freshness.py                 # 500 txns/s for 30 s: bench/results/freshness.json
    scripts/bench_freshness.py --quick         # 200 txns/s for 3 s: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from viewstore.pgcluster import ThrowawayPostgres
from viewstore.store.demo import SEED_SQL, VIEW_SQL

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
VIEW = "player_total_scores"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            r = httpx.get(url + "/views", timeout=1)
            if r.status_code == 200 and any(v["name"] == VIEW for v in r.json()):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not serve {VIEW} within {timeout} s")


class Subscriber(threading.Thread):
    """Streams the view's changes; records (arrival, commit time) of every +1 line."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.arrivals: list[tuple[float, float]] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except httpx.HTTPError:
            if not self.stop.is_set():  # the server going away at the end is expected
                raise

    def _read(self) -> None:
        with httpx.stream("GET", f"{self.url}/views/{VIEW}/changes", timeout=None) as r:
            self.ready.set()
            for line in r.iter_lines():
                now = time.time()
                if self.stop.is_set():
                    return
                event = json.loads(line)
                if event.get("diff") == 1 and event.get("commit_time"):
                    committed = datetime.fromisoformat(event["commit_time"]).timestamp()
                    self.arrivals.append((now, committed))


def write(dsn: str, rate: float, seconds: float, players: int) -> int:
    """Single-score transactions at a steady rate; the number committed."""
    rng = random.Random(7)
    n = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.monotonic()
        while True:
            due = start + n / rate
            now = time.monotonic()
            if now - start >= seconds:
                return n
            if due > now:
                time.sleep(due - now)
            conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)",
                (rng.randint(1, players), rng.randint(1, 10_000) / 100),
            )
            n += 1


def percentiles(latencies: list[float]) -> dict[str, float]:
    xs = sorted(latencies)
    if not xs:
        return {}
    return {
        "p50_ms": round(1000 * statistics.median(xs), 2),
        "p99_ms": round(1000 * xs[min(len(xs) - 1, int(0.99 * len(xs)))], 2),
        "max_ms": round(1000 * xs[-1], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="transactions per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--serve", action="store_true", help="also measure `viewstore serve`")
    parser.add_argument("--quick", action="store_true", help="200 txns/s for 3 s")
    parser.add_argument("--out", type=Path, default=RESULTS / "freshness.json")
    args = parser.parse_args()
    if args.quick:
        args.rate, args.seconds = 200.0, 3.0

    tmp = Path(tempfile.mkdtemp(prefix="vs-bench-fresh-"))
    pg = ThrowawayPostgres({"synchronous_commit": "on", "autovacuum": "off"}).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            for stmt in SEED_SQL[:2]:  # the tables; players are generated below
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO players SELECT g, 'player ' || g FROM generate_series(1, %s) g",
                (args.players,),
            )
        views = tmp / "views.sql"
        views.write_text(VIEW_SQL)
        data = tmp / "data"
        port = free_port()
        log = open(tmp / "run.log", "wb")  # noqa: SIM115 - the child writes it
        cmd = [sys.executable, "-m", "viewstore.cli", "run", "--dsn", pg.dsn, "--data", str(data)]
        procs.append(
            subprocess.Popen(
                [*cmd, "--views", str(views), "--http", f"127.0.0.1:{port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        targets = {"run --http": f"http://127.0.0.1:{port}"}
        wait_http(targets["run --http"], procs[0])
        if args.serve:
            serve_port = free_port()
            procs.append(
                subprocess.Popen(
                    [*cmd[:3], "serve", "--data", str(data), "--http", f"127.0.0.1:{serve_port}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            targets["serve"] = f"http://127.0.0.1:{serve_port}"
            wait_http(targets["serve"], procs[-1])

        subscribers = {name: Subscriber(url) for name, url in targets.items()}
        for s in subscribers.values():
            s.start()
            s.ready.wait(30)
        time.sleep(0.5)
        started = time.monotonic()
        committed = write(pg.dsn, args.rate, args.seconds, args.players)
        elapsed = time.monotonic() - started
        time.sleep(2.0)  # the last changes arrive
        for s in subscribers.values():
            s.stop.set()

        results: dict[str, Any] = {}
        for name, s in subscribers.items():
            latencies = [arrived - commit for arrived, commit in s.arrivals]
            results[name] = {"received": len(latencies), **percentiles(latencies)}
        metrics = httpx.get(targets["run --http"] + "/metrics", timeout=5).text
        report = {
            "benchmark": "freshness: Postgres commit to subscriber",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "postgres": pg.bindir.parent.name,
            },
            "workload": {
                "rate_target": args.rate,
                "seconds": args.seconds,
                "transactions": committed,
                "rate_achieved": round(committed / elapsed, 1),
                "players": args.players,
                "synchronous_commit": "on",
            },
            "subscribers": results,
            "apply_latency": [m for m in metrics.splitlines() if m.startswith("viewstore_apply")],
        }
        print(f"{committed} transactions at {committed / elapsed:.0f}/s for {elapsed:.1f} s")
        for name, r in results.items():
            print(
                f"{name:>12}: {r['received']} changes, commit to subscriber "
                f"p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, max {r.get('max_ms')} ms"
            )
        if any(r["received"] < committed for r in results.values()):
            print("some changes did not arrive", file=sys.stderr)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results: {args.out}")
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
