#!/usr/bin/env python3
"""Freshness benchmark: from a commit in Postgres to the change arriving at a subscriber.

Workload. A throwaway Postgres (synchronous_commit on, as in production: with it off, the
walsender only sends WAL once the WAL writer flushes it, every 200 ms) with the seed's schema,
`--players` players and the seed's view. `viewstore run --views ... --http` runs as its own
process. One writer commits single-row transactions (a score for a random player) at a steady
`--rate` per second for `--seconds`.

Measurement. Commit to subscriber: a subscriber streams GET /views/player_total_scores/changes
(NDJSON) over HTTP and stamps each line as it arrives. Each change carries its transaction's
commit timestamp (Postgres's clock; same machine), so the latency of a transaction is the
arrival of its +1 line minus its commit time: decode, apply, the synced group write, the HTTP
server's wake-up (it polls the applied LSN every 5 ms) and the stream. Reported: p50, p99 and
max over every transaction, and how many arrived. Also the same for `viewstore serve`, a
separate process following the store (it catches up with the writer's log, polling every
20 ms), when `--serve` is given.

Commit to visible: about 20 transactions a second are sampled; right after its COMMIT returns,
a reader polls the query API (GET /views/player_total_scores?player_id=X) until the player's
total includes the new score (the writer knows every total: the table starts empty and scores
only grow). Its latency is from COMMIT returning to the first read that shows it.

Each rate in `--rates` is one phase of `--seconds`; the writer is one connection, so the
highest rates are what one Python client can commit (the achieved rate is reported).

    scripts/bench_freshness.py                # 500 txns/s, 30 s: bench/results/freshness.json
    scripts/bench_freshness.py --rates 100,1000,5000 --seconds 20
    scripts/bench_freshness.py --quick        # 200 txns/s for 3 s: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
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
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from viewstore.demo import SEED_SQL, VIEW_SQL
from viewstore.pgcluster import ThrowawayPostgres

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


class Visibility(threading.Thread):
    """Polls the query API for sampled transactions until each shows; records the latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: queue.Queue[tuple[float, int, Decimal] | None] = queue.Queue()
        self.latencies: list[float] = []
        self.client = httpx.Client(timeout=10)

    def run(self) -> None:
        while (sample := self.samples.get()) is not None:
            committed, player, total = sample
            while True:
                r = self.client.get(f"{self.url}/views/{VIEW}", params={"player_id": player})
                rows = r.json()["rows"]
                if rows and Decimal(rows[0]["total_score"]) >= total:
                    self.latencies.append(time.monotonic() - committed)
                    break
                time.sleep(0.0005)


def write(
    dsn: str, rate: float, seconds: float, players: int, totals: dict[int, Decimal], sampler: Any
) -> int:
    """Single-score transactions at a steady rate; the number committed. About 20 a second
    go to `sampler` with the moment their COMMIT returned and the player's new total."""
    rng = random.Random(int(rate))
    every = max(1, int(rate / 20))
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
            player, score = rng.randint(1, players), Decimal(rng.randint(1, 10_000)) / 100
            conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)", (player, score)
            )
            totals[player] = totals.get(player, Decimal(0)) + score
            if n % every == 0:
                sampler.samples.put((time.monotonic(), player, totals[player]))
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
    parser.add_argument(
        "--rates",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[500.0],
        help="transactions per second, one phase each (comma-separated)",
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--serve", action="store_true", help="also measure `viewstore serve`")
    parser.add_argument("--quick", action="store_true", help="200 txns/s for 3 s")
    parser.add_argument("--out", type=Path, default=RESULTS / "freshness.json")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.seconds = [200.0], 3.0

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
        totals: dict[int, Decimal] = {}
        phases = []
        for rate in args.rates:
            for s in subscribers.values():
                s.arrivals.clear()
            sampler = Visibility(targets["run --http"])
            sampler.start()
            started = time.monotonic()
            committed = write(pg.dsn, rate, args.seconds, args.players, totals, sampler)
            elapsed = time.monotonic() - started
            sampler.samples.put(None)
            sampler.join(30)
            deadline = time.monotonic() + 30  # the last changes arrive
            while any(len(s.arrivals) < committed for s in subscribers.values()):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            phase: dict[str, Any] = {
                "rate_target": rate,
                "seconds": round(elapsed, 1),
                "transactions": committed,
                "rate_achieved": round(committed / elapsed, 1),
                "commit_to_visible": {
                    "sampled": len(sampler.latencies),
                    **percentiles(sampler.latencies),
                },
                "commit_to_subscriber": {},
            }
            for name, s in subscribers.items():
                latencies = [arrived - commit for arrived, commit in s.arrivals]
                phase["commit_to_subscriber"][name] = {
                    "received": len(latencies),
                    **percentiles(latencies),
                }
            phases.append(phase)
            print(f"{committed} transactions at {committed / elapsed:.0f}/s for {elapsed:.1f} s")
            v = phase["commit_to_visible"]
            print(
                f"{'query API':>12}: {v['sampled']} sampled, commit to visible "
                f"p50 {v.get('p50_ms')} ms, p99 {v.get('p99_ms')} ms, max {v.get('max_ms')} ms"
            )
            for name, r in phase["commit_to_subscriber"].items():
                print(
                    f"{name:>12}: {r['received']} changes, commit to subscriber "
                    f"p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, max {r.get('max_ms')} ms"
                )
        for s in subscribers.values():
            s.stop.set()

        metrics = httpx.get(targets["run --http"] + "/metrics", timeout=5).text
        report = {
            "benchmark": "freshness: Postgres commit to visible (query API) and to subscriber",
            "command_line": " ".join(["scripts/bench_freshness.py", *sys.argv[1:]]),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "postgres": pg.bindir.parent.name,
            },
            "workload": {
                "players": args.players,
                "transaction": "INSERT one score (autocommit), one writer connection",
                "synchronous_commit": "on",
            },
            "phases": phases,
            "apply_latency": [m for m in metrics.splitlines() if m.startswith("viewstore_apply")],
        }
        lost = [
            (p["rate_target"], name)
            for p in phases
            for name, r in p["commit_to_subscriber"].items()
            if r["received"] < p["transactions"]
        ]
        if lost:
            print(f"some changes did not arrive: {lost}", file=sys.stderr)
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
