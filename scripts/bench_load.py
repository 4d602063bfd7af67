#!/usr/bin/env python3
"""Load benchmark: many subscribers and steady reads while ingest runs (issue 19.5).

Workload. A throwaway Postgres (synchronous_commit on) with the seed's schema, `--players`
players and the seed's view; `viewstore run --views ... --http` as its own process. For
`--seconds`, at once:

- a writer commits single-row transactions (a score for a random player) at `--rate` per second;
- `--subscribers` clients stream GET /views/player_total_scores/changes from the LSN the run
  began at (NDJSON, one HTTP connection each, all in one asyncio client process);
- a reader issues `--reads` requests per second, in turn a point read (?player_id=X), the top 10
  (?order_by=total_score&desc=true&limit=10) and the whole view as of a random LSN seen earlier
  (?as_of=LSN), and times each.

Checks. No request fails, no stream ends early. Every subscriber's change lines (all but the
`progress` lines, whose placement depends on timing) are byte for byte the same as every other
subscriber's (compared by hash); one of them is decoded and folded onto the view as of the start
LSN, which must equal Postgres's own evaluation of the view's SQL at the end (nothing writes
by then), and carry one transaction per committed write. So every stream is exact.

Reported (bench/results/load.json): transactions achieved, read latency p50/p99/max per kind,
subscriber lag at the end of the run (the last change's arrival after the writer stopped), the
server's peak RSS and CPU. The 2-core machine runs Postgres, viewstore and the clients at once:
the figures are of all three sharing it.

    scripts/bench_load.py                       # 200 subscribers, 100 reads/s, 1000 txns/s, 60 s
    scripts/bench_load.py --quick               # 20 subscribers, 20 reads/s, 200 txns/s, 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psycopg
from bench_freshness import free_port, percentiles, wait_http  # scripts/ is on sys.path

from viewstore.demo import SEED_SQL, VIEW_SQL
from viewstore.pgcluster import ThrowawayPostgres

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
VIEW = "player_total_scores"
VIEW_QUERY = VIEW_SQL.split(" AS\n", 1)[1].rstrip().rstrip(";")


class Subscriber:
    """One change stream: a hash of its change lines; the reference one keeps them too."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.hash = hashlib.sha256()
        self.changes = 0
        self.kept: list[bytes] = []
        self.last_arrival = 0.0
        self.progress: str | None = None
        self.error: str | None = None

    def take(self, line: bytes) -> None:
        if line.startswith(b'{"progress"'):
            self.progress = json.loads(line)["progress"]
            return
        if line.startswith(b'{"error"'):
            self.error = line.decode()
            return
        self.hash.update(line + b"\n")
        self.changes += 1
        self.last_arrival = time.monotonic()
        if self.keep:
            self.kept.append(line)


async def subscribe(url: str, since: str, sub: Subscriber, stop: asyncio.Event) -> None:
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", f"{url}/views/{VIEW}/changes", params={"since": since}) as r,
    ):
        if r.status_code != 200:
            sub.error = f"HTTP {r.status_code}"
            return
        buf = b""
        async for data in r.aiter_raw():
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                sub.take(line)
            if stop.is_set():
                return


def run_subscribers(url: str, since: str, count: int, conn: Connection) -> None:
    """In a process of its own (its parsing would take the writer's GIL): `count` streams until
    told to stop, then sends back each one's (hash, changes, last arrival, progress, error) and
    the first one's lines."""
    subs = [Subscriber(keep=(i == 0)) for i in range(count)]

    async def main() -> None:
        astop = asyncio.Event()
        tasks = [asyncio.create_task(subscribe(url, since, s, astop)) for s in subs]
        conn.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "report":  # without stopping: the parent watches them catch up
                conn.send([(s.changes, s.progress, s.error) for s in subs])
            else:
                break
        astop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send(
            (
                [(s.hash.hexdigest(), s.changes, s.last_arrival, s.error) for s in subs],
                subs[0].kept,
            )
        )

    asyncio.run(main())


class Reader(threading.Thread):
    """`rate` reads a second on schedule (open loop: a slow read does not delay the next, up to
    READERS at once), round robin over the kinds; latencies per kind."""

    READERS = 16

    def __init__(self, url: str, rate: float, players: int, lsns: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.players, self.lsns = url, rate, players, lsns
        self.latencies: dict[str, list[float]] = {"point": [], "top10": [], "as_of": []}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=self.READERS))

    def run(self) -> None:
        rng = random.Random(19)
        kinds = list(self.latencies)
        with ThreadPoolExecutor(self.READERS) as pool:
            start, n = time.monotonic(), 0
            while not self.stop.is_set():
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                kind = kinds[n % len(kinds)]
                n += 1
                params: dict[str, Any]
                if kind == "point":
                    params = {"player_id": rng.randint(1, self.players)}
                elif kind == "top10":
                    params = {"order_by": "total_score", "desc": "true", "limit": 10}
                else:
                    params = {"as_of": rng.choice(self.lsns), "limit": 100_000}
                pool.submit(self._read, kind, params)
        self.client.close()

    def _read(self, kind: str, params: dict[str, Any]) -> None:
        t = time.monotonic()
        try:
            r = self.client.get(f"{self.url}/views/{VIEW}", params=params)
        except httpx.HTTPError as exc:
            self.errors.append(f"{kind}: {exc!r}")
            return
        self.latencies[kind].append(time.monotonic() - t)
        if r.status_code != 200:
            self.errors.append(f"{kind}: HTTP {r.status_code} {r.text[:200]}")


def write(dsn: str, rate: float, seconds: float, players: int, url: str, lsns: list[str]) -> int:
    """Single-score transactions at a steady rate; the number committed. Every second, the
    server's applied LSN joins `lsns` (the as-of reads pick from them)."""
    rng = random.Random(5)
    n = 0
    with psycopg.connect(dsn, autocommit=True) as conn, httpx.Client(timeout=10) as client:
        start = last = time.monotonic()
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                return n
            due = start + n / rate
            if due > now:
                time.sleep(due - now)
            conn.execute(
                "INSERT INTO player_scores (player_id, score) VALUES (%s, %s)",
                (rng.randint(1, players), Decimal(rng.randint(1, 10_000)) / 100),
            )
            n += 1
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                lsns.append(client.get(f"{url}/healthz").json()["applied_lsn"])


def fold(snapshot: dict[Any, dict[str, Any]], lines: list[bytes]) -> tuple[dict[Any, Any], int]:
    """The view after applying the change lines to `snapshot`; the number of transactions."""
    view = dict(snapshot)
    lsns = set()
    for line in lines:
        e = json.loads(line)
        if "diff" not in e:
            continue
        lsns.add(e["lsn"])
        key = e["row"]["player_id"]
        if e["diff"] == 1:
            view[key] = e["row"]
        elif view.get(key) == e["row"]:
            del view[key]
    return view, len(lsns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--reads", type=float, default=100.0, help="reads per second")
    parser.add_argument("--rate", type=float, default=1000.0, help="transactions per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--players", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a smoke test of a few seconds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.reads, args.rate, args.seconds = 20, 20.0, 200.0, 5.0
    out = args.out or (
        Path(tempfile.mkdtemp()) / "load.json" if args.quick else RESULTS / "load.json"
    )

    tmp = Path(tempfile.mkdtemp(prefix="vs-bench-load-"))
    pg = ThrowawayPostgres({"synchronous_commit": "on", "autovacuum": "off"}).start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            for stmt in SEED_SQL[:2]:
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO players SELECT g, 'player ' || g FROM generate_series(1, %s) g",
                (args.players,),
            )
            conn.execute(
                "INSERT INTO player_scores (player_id, score) "
                "SELECT 1 + g %% %s, (g %% 1000) / 10.0 FROM generate_series(1, 10000) g",
                (args.players,),
            )
        views = tmp / "views.sql"
        views.write_text(VIEW_SQL)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = open(tmp / "run.log", "wb")  # noqa: SIM115 - the child writes it
        proc = subprocess.Popen(
            [sys.executable, "-m", "viewstore.cli", "run", "--dsn", pg.dsn,
             "--data", str(tmp / "data"), "--views", str(views), "--http", f"127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_http(url, proc)
        start = httpx.get(f"{url}/views/{VIEW}", params={"limit": 100_000}, timeout=30).json()
        since = start["lsn"]
        snapshot = {r["player_id"]: r for r in start["rows"]}
        lsns = [since]

        ours, theirs = multiprocessing.Pipe()
        client = multiprocessing.get_context("spawn").Process(
            target=run_subscribers, args=(url, since, args.subscribers, theirs), daemon=True
        )
        client.start()
        if not ours.poll(60) or ours.recv() != "ready":
            raise SystemExit("the subscribers' process did not start")
        time.sleep(1.0)  # the connections open
        reader = Reader(url, args.reads, args.players, lsns)
        reader.start()
        began = time.monotonic()
        committed = write(pg.dsn, args.rate, args.seconds, args.players, url, lsns)
        writer_done = time.monotonic()
        wrote_for = writer_done - began
        reader.stop.set()
        reader.join(120)
        # Every subscriber has every change: wait for the last of them.
        with psycopg.connect(pg.dsn) as conn:
            end_lsn = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        deadline = writer_done + 120
        while time.monotonic() < deadline:
            ours.send("report")
            states = ours.recv()
            if all(error for _, _, error in states):
                break
            health = httpx.get(f"{url}/healthz", timeout=30).json()["applied_lsn"]
            if _lsn(health) >= _lsn(end_lsn) and all(
                _lsn(progress or "0/0") >= _lsn(health) for _, progress, _ in states
            ):
                break
            time.sleep(0.2)
        caught_up = time.monotonic() - writer_done
        ours.send("stop")
        streams, kept = ours.recv()
        client.join(30)

        usage = _proc_usage(proc.pid)
        with psycopg.connect(pg.dsn) as conn:
            want = {
                r[0]: r
                for r in conn.execute(
                    f"SELECT player_id, name, total_score::text FROM ({VIEW_QUERY}) v"
                ).fetchall()
            }
        folded, transactions = fold(snapshot, kept)
        got = {k: (k, r["name"], str(r["total_score"])) for k, r in folded.items()}
        digests = {digest for digest, _, _, _ in streams}
        errors = [error for _, _, _, error in streams if error]
        problems = []
        if errors:
            problems.append(f"stream errors: {errors[:3]}")
        if len(digests) != 1:
            problems.append(f"subscribers disagree: {len(digests)} different change streams")
        if got != want:
            problems.append("the folded stream differs from Postgres's view")
        if transactions != committed:
            problems.append(f"{transactions} transactions streamed, {committed} committed")
        if reader.errors:
            problems.append(f"read errors: {reader.errors[:3]}")
        lags = [last - writer_done for _, _, last, _ in streams]
        report = {
            "benchmark": "load: subscribers and reads while ingest runs (issue 19.5)",
            "command_line": " ".join(["scripts/bench_load.py", *sys.argv[1:]]),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "postgres": pg.bindir.parent.name},
            "workload": {
                "subscribers": args.subscribers,
                "reads_per_s_target": args.reads,
                "txns_per_s_target": args.rate,
                "seconds": args.seconds,
                "players": args.players,
            },
            "transactions": committed,
            "txns_per_s_achieved": round(committed / wrote_for, 1),
            "reads": {
                kind: {"count": len(xs), **percentiles(xs)} for kind, xs in reader.latencies.items()
            },
            "reads_per_s_achieved": round(
                sum(len(xs) for xs in reader.latencies.values()) / wrote_for, 1
            ),
            "subscribers": {
                "changes_each": streams[0][1],
                "identical_streams": len(digests) == 1,
                "folded_equals_postgres": got == want,
                "last_change_after_writer_stopped_s": {
                    "max": round(max(lags), 2),
                    "median": round(sorted(lags)[len(lags) // 2], 2),
                },
                "all_caught_up_after_s": round(caught_up, 2),
            },
            "server": usage,
            "problems": problems,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: report[k] for k in ("txns_per_s_achieved", "reads",
                                                 "reads_per_s_achieved", "subscribers",
                                                 "server", "problems")}, indent=2))  # fmt: skip
        print(f"results: {out}")
        return 1 if problems else 0
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.stop()


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def _proc_usage(pid: int) -> dict[str, Any]:
    """The server's peak RSS (VmHWM) and CPU seconds so far."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "peak_rss_mib": round(hwm / 1024, 1),
        "cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
